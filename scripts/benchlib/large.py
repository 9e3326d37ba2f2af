"""L1 (256 MiB written until durable and read cold, next to curl over the same link) and
the scale run (a repo of N files: find, du, ls -lR, and the daemon's peak RSS)."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from . import data, procs
from .api import Item
from .context import Ctx

RSS_TARGET_MIB = round(150e6 / 2**20, 1)  # the 150 MB: 143.1 MiB


def _q(path: object) -> str:
    return shlex.quote(str(path))


def _curl(ctx: Ctx, args: str) -> tuple[float, int, float]:
    """curl with the token from a header file (never on a command line): (wall seconds,
    HTTP status, curl's own time_total)."""
    header = ctx.work / "auth.header"
    if not header.exists():
        header.touch(mode=0o600)
        header.write_text(f"Authorization: Bearer {ctx.token}\n")
    fmt = "%{http_code} %{time_total}"
    cmd = f"curl -sS -o /dev/null -w '{fmt}' -H @{_q(header)} -H 'Expect:' {args}"
    secs, out = procs.run_shell(cmd)
    code, total = out.split()
    if not code.startswith("2"):
        raise RuntimeError(f"curl {args}: HTTP {code}")
    return secs, int(code), float(total)


def _dd_bytes(out: str) -> int:
    m = re.search(r"^(\d+) bytes", out, re.M)
    return int(m[1]) if m else -1


def l1(ctx: Ctx) -> None:
    mib = ctx.args.big_mb
    size = mib << 20
    src = data.prng_file(ctx.data, "l1", mib, 1)
    put_src = data.prng_file(ctx.data, "l1put", mib, 2)
    put_sha = data.sha256_file(put_src)
    sha = data.sha256_file(src)  # also leaves the source in the page cache
    repo = ctx.repo("bench")
    link = ctx.link_url

    # the reference upload: the same amount as one blob, by curl over the same link
    procs.run_shell(f"cat {_q(put_src)} > /dev/null")
    a = ctx.mark()
    secs, _, ctime = _curl(ctx, f"-T {_q(put_src)} {link}/v1/repos/{repo}/blobs/{put_sha}")
    put_ref = ctx.add(
        "L1",
        f"reference: curl PUT of a {mib} MiB blob",
        mib / secs,
        "MiB/s",
        seconds=secs,
        requests=ctx.counts(a),
        extra={"curl_time_total_s": ctime},
    )

    m = ctx.mount(repo, cold=True)
    try:
        procs.run_shell(f"cat {_q(src)} > /dev/null")  # the source warm, the mount cold
        a = ctx.mark()
        t0 = time.monotonic()
        procs.run_shell(f"dd if={_q(src)} of={_q(m.path / 'l1.bin')} bs=1M conv=fsync status=none")
        t_dd = time.monotonic() - t0
        mid = ctx.mark()
        m.sync()
        t_durable = time.monotonic() - t0
        counts = ctx.counts(a)
        after_dd = ctx.counts(mid).total
        rss = m.peak_rss_mib()
    finally:
        ctx.unmount(m)
    held = ctx.api.head(repo, "l1.bin")
    check = "sha256-ok" if held == (size, sha) else f"server holds {held}"
    ctx.add(
        "L1",
        f"write {mib} MiB (dd conv=fsync), cold mount",
        mib / t_dd,
        "MiB/s",
        seconds=t_dd,
        requests=ctx.counts(a, mid),
        rss_mib=rss,
    )
    durable = ctx.add(
        "L1",
        "  ... until durable (dd + repomount sync)",
        mib / t_durable,
        "MiB/s",
        seconds=t_durable,
        requests=counts,
        rss_mib=rss,
        extra={"after_dd_requests": after_dd, "server": check},
    )

    # the reference download: a GET of the file by curl, caches dropped on both sides
    ctx.unmount_all()
    procs.drop_caches()
    a = ctx.mark()
    secs, _, ctime = _curl(ctx, f"{link}/v1/repos/{repo}/files/l1.bin")
    get_ref = ctx.add(
        "L1",
        f"reference: curl GET of the {mib} MiB file",
        mib / secs,
        "MiB/s",
        seconds=secs,
        requests=ctx.counts(a),
        extra={"curl_time_total_s": ctime},
    )

    m = ctx.mount(repo, cold=True)
    try:
        # Looked up first, as E1 does: the first lookup lists the file's directory
        # (reported as lookup_s), which is not this transfer's throughput (nor are its
        # requests counted here).
        t0 = time.monotonic()
        os.stat(m.path / "l1.bin")
        lookup = time.monotonic() - t0
        a = ctx.mark()
        secs, out = procs.run_shell(f"dd if={_q(m.path / 'l1.bin')} of=/dev/null bs=1M 2>&1")
        got = _dd_bytes(out)
        read = ctx.add(
            "L1",
            f"read {mib} MiB (dd), cold",
            mib / secs,
            "MiB/s",
            seconds=secs,
            requests=ctx.counts(a),
            rss_mib=m.peak_rss_mib(),
            extra={
                "bytes": got,
                "check": "ok" if got == size else f"read {got} bytes",
                "lookup_s": round(lookup, 3),
            },
        )
    finally:
        ctx.unmount(m)
    for mine, ref in ((durable, put_ref), (read, get_ref)):
        if mine.value and ref.value:
            mine.extra["of_curl"] = f"{100 * mine.value / ref.value:.0f}%"


def _scale_items(n: int) -> Iterator[Item]:
    for i in range(n):
        yield Item(_scale_path(i), data=(f"scale file {i}\n" * 6).encode())


def _scale_path(i: int) -> str:
    return f"d{i // 1000:04}/e{i // 100 % 10}/f{i:07}.txt"


def _git_metadata(ctx: Ctx, n: int) -> list[Item]:
    """A git repository of the scale tree, made on local disk (init, add, commit, gc):
    its `.git` files, to seed beside the tree so that `git status` runs on the mount.
    Objects are packed, refs left loose: only files are seeded, and git wants `refs/`."""
    top = ctx.work / f"scale-git-{n}"
    done = top / "made"  # (outside .git: not seeded)
    if not done.exists():
        shutil.rmtree(top, ignore_errors=True)
        for item in _scale_items(n):
            dest = top / item.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(item.content())
        conf = ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "gc.auto=0"]
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "scale"]):
            subprocess.run(["git", *conf, *args], cwd=top, check=True)
        subprocess.run(["git", "repack", "-a", "-d", "-q"], cwd=top, check=True)
        # The branch as a loose ref too: an empty refs/ would not be seeded.
        branch = _git(top, "symbolic-ref", "HEAD")
        (top / ".git" / branch).parent.mkdir(parents=True, exist_ok=True)
        (top / ".git" / branch).write_text(_git(top, "rev-parse", "HEAD") + "\n")
        done.touch()
    return [
        Item(str(f.relative_to(top)), local=f)
        for f in sorted((top / ".git").rglob("*"))
        if f.is_file()
    ]


def _git(top: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=top, check=True, capture_output=True, text=True
    ).stdout.strip()


def scale(ctx: Ctx, n: int) -> None:
    repo = ctx.repo("scale")
    t = time.monotonic()
    git_items = _git_metadata(ctx, n)
    commits = ctx.api.seed(repo, itertools.chain(_scale_items(n), git_items))
    procs.log(f"seeded scale: {n} files and .git in {commits} commits, {time.monotonic() - t:.1f}s")
    files = [_scale_path(i) for i in range(n)] + [i.path for i in git_items]
    dirs = {str(parent) for f in files for parent in Path(f).parents} - {"."}
    want_find = len(files) + len(dirs) + 1  # (and the mount point itself)
    m = ctx.mount(repo, cold=True)
    rss = 0.0
    try:
        steps = (
            ("find | wc -l, cold", f"find {_q(m.path)} | wc -l"),
            ("du -s, right after", f"du -s {_q(m.path)}"),
            ("ls -lR > /dev/null, right after", f"ls -lR {_q(m.path)} > /dev/null"),
            # (Every file's stat differs from the index made elsewhere: git reads them
            # all, by name in path order, and writes the index back.)
            (
                "git status, right after (reads every file)",
                f"git -c safe.directory='*' -C {_q(m.path)} status --porcelain | wc -l",
            ),
            (
                "git status again",
                f"git -c safe.directory='*' -C {_q(m.path)} status --porcelain | wc -l",
            ),
        )
        for fig, cmd in steps:
            a = ctx.mark()
            secs, out = procs.run_shell(cmd)
            rss = m.peak_rss_mib()
            extra: dict[str, object] = {}
            if fig.startswith("find") and int(out.split()[0]) != want_find:
                extra["check"] = f"find printed {out.strip()} names, expected {want_find}"
            if fig.startswith("git") and out.strip() != "0":
                extra["check"] = f"git status printed {out.strip()} changed paths, expected 0"
            ctx.add(
                "SCALE",
                f"{n} files: {fig}",
                secs,
                "s",
                seconds=secs,
                requests=ctx.counts(a),
                rss_mib=rss,
                extra=extra,
            )
    finally:
        ctx.unmount(m)
    ctx.add(
        "SCALE",
        f"{n} files: daemon peak RSS (target <= {RSS_TARGET_MIB})",
        rss,
        "MiB",
        rss_mib=rss,
        extra={"within_target": rss <= RSS_TARGET_MIB},
    )
