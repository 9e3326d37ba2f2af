"""The small-file workloads: W1 (cp -r until durable), R1/R2 (tar, cold then warm),
M1 (find and ls -lR of 10,020 files, cold), E1 (write 1 KiB + fsync + close), S1 (stat
latency while 10,000 held changes settle)."""

from __future__ import annotations

import os
import shlex
import statistics
import threading
import time

from . import procs
from .api import Item, check_tree, put_latency
from .context import Ctx

M1_COPIES = 5


def _q(path: object) -> str:
    return shlex.quote(str(path))


def w1(ctx: Ctx) -> None:
    tree = ctx.tree
    procs.run_shell(f"tar -C {_q(tree.root)} -cf - . | wc -c")  # the source warm, as for cp
    m = ctx.mount(ctx.repo("bench"), cold=False)
    try:
        t = time.monotonic()
        m.sync()
        sync_idle = time.monotonic() - t
        a = ctx.mark()
        t0 = time.monotonic()
        procs.run_shell(f"cp -r {_q(tree.root)} {_q(m.path / 'w1')}")
        t_cp = time.monotonic() - t0
        mid = ctx.mark()
        m.sync()
        t_durable = time.monotonic() - t0
        b = ctx.mark()
        rss = m.peak_rss_mib()
    finally:
        ctx.unmount(m)
    check = check_tree(ctx.api, "bench", "w1", tree.files)
    ctx.w1_seeded = check == "sha256-ok"
    n = len(tree.files)
    ctx.add(
        "W1",
        f"cp -r {n} files ({tree.bytes / 2**20:.1f} MiB), cp alone",
        t_cp,
        "s",
        seconds=t_cp,
        requests=ctx.counts(a, mid),
        rss_mib=rss,
    )
    ctx.add(
        "W1",
        "  ... until durable (cp + repomount sync)",
        t_durable,
        "s",
        seconds=t_durable,
        requests=ctx.counts(a, b),
        rss_mib=rss,
        extra={
            "files_per_s": round(n / t_durable, 1),
            "after_cp_requests": ctx.counts(mid, b).total,
            "sync_idle_s": round(sync_idle, 3),
            "tree": check,
        },
    )


def _tar_bytes_local(ctx: Ctx) -> int:
    _, out = procs.run_shell(f"tar -C {_q(ctx.tree.root)} -cf - . | wc -c")
    return int(out.split()[0])


def r1_r2(ctx: Ctx) -> None:
    ctx.ensure_w1()
    want = _tar_bytes_local(ctx)
    m = ctx.mount("bench", cold=True)
    try:
        for name, label in (("R1", "tar c of W1's tree, cold"), ("R2", "tar c again, warm")):
            a = ctx.mark()
            secs, out = procs.run_shell(f"tar -C {_q(m.path / 'w1')} -cf - . | wc -c")
            got = int(out.split()[0])
            ctx.add(
                name,
                label,
                secs,
                "s",
                seconds=secs,
                requests=ctx.counts(a),
                rss_mib=m.peak_rss_mib(),
                extra={
                    "tar_bytes": got,
                    "MiB_s": round(got / 2**20 / secs, 1),
                    "check": "ok" if got == want else f"bytes {got} != local {want}",
                },
            )
    finally:
        ctx.unmount(m)


def seed_m1(ctx: Ctx) -> None:
    """5 copies of W1's tree in the repo m1 (10,020 files for 2,004), batch commits."""
    repo = ctx.repo("m1")
    items = [
        Item(f"c{k}/{p}", local=ctx.tree.root / p)
        for k in range(M1_COPIES)
        for p, _, _ in ctx.tree.files
    ]
    t = time.monotonic()
    commits = ctx.api.seed(repo, items)
    procs.log(f"seeded m1: {len(items)} files in {commits} commits, {time.monotonic() - t:.1f}s")


def m1(ctx: Ctx) -> None:
    if "m1" not in ctx.repos:
        seed_m1(ctx)
    want = M1_COPIES * len(ctx.tree.files)
    for fig, cmd in (
        ("find -type f | wc -l, cold", "find {} -type f | wc -l"),
        ("ls -lR > /dev/null, cold", "ls -lR {} > /dev/null"),
    ):
        m = ctx.mount("m1", cold=True)
        try:
            a = ctx.mark()
            secs, out = procs.run_shell(cmd.format(_q(m.path)))
            extra: dict[str, object] = {"files": want}
            if "find" in cmd and int(out.split()[0]) != want:
                extra["check"] = f"found {out.strip()} files, expected {want}"
            ctx.add(
                "M1",
                f"{fig} ({want} files)",
                secs,
                "s",
                seconds=secs,
                requests=ctx.counts(a),
                rss_mib=m.peak_rss_mib(),
                extra=extra,
            )
        finally:
            ctx.unmount(m)


def _e1_target(ctx: Ctx) -> str:
    names = [p for p, _, _ in ctx.tree.files]
    return "__future__.py" if "__future__.py" in names else names[0]


def e1(ctx: Ctx) -> None:
    ctx.ensure_w1()
    rel = f"w1/{_e1_target(ctx)}"
    rounds = ctx.args.e1_rounds
    m = ctx.mount("bench", cold=False)
    try:
        path = m.path / rel
        os.stat(path)  # looked up once, as an editor would have it open already
        times: list[float] = []
        a = ctx.mark()
        t0 = time.monotonic()
        for i in range(rounds):
            payload = (f"{i:06} " * 147).encode()[:1024]
            t = time.perf_counter()
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            os.write(fd, payload)
            os.fsync(fd)
            os.close(fd)
            times.append(time.perf_counter() - t)
        total = time.monotonic() - t0
        counts = ctx.counts(a)
        rss = m.peak_rss_mib()
    finally:
        ctx.unmount(m)
    ok = ctx.api.get("bench", rel) == payload
    times.sort()
    ms = [1000 * x for x in times]
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    ref = put_latency(ctx.link_url, ctx.token, "bench")
    med = statistics.median(ms)
    extra = {
        "rounds": rounds,
        "p90_ms": round(p90, 2),
        "max_ms": round(ms[-1], 2),
        "requests_per_round": round(counts.total / rounds, 2),
        "server": "ok" if ok else "WRONG",
        "vs_bare_put": round(med / ref["median_ms"], 2),
    }
    ctx.add(
        "E1",
        f"write 1 KiB + fsync + close, median of {rounds}",
        med,
        "ms",
        seconds=total,
        requests=counts,
        rss_mib=rss,
        extra=extra,
    )
    ctx.add("E1", "  ... p90", p90, "ms")
    ctx.add(
        "E1",
        "  reference: bare HTTP PUT of 1 KiB, median",
        ref["median_ms"],
        "ms",
        extra={"client": "httpx, kept-alive connection"},
    )


def settle(ctx: Ctx) -> None:
    """S1 (kept from the earlier bench): `count` files written and closed on a mount that
    holds its changes, then `stat` (of a file, and of the busy directory) timed every
    10 ms while `sync` settles them all: the journal, coalescer and flusher must not stall
    requests meanwhile."""
    count = ctx.args.settle_files
    hold = ["--flush-delay", "3600", "--max-flush-window", "3600"]  # until `sync`
    ctx.ensure_w1()
    m = ctx.mount("bench", cold=False, extra=hold)
    try:
        d = m.path / "settle"
        d.mkdir()
        t0 = time.monotonic()
        for i in range(count):
            (d / f"s{i}").write_bytes(b"x")
        t_write = time.monotonic() - t0
        probe = m.path / "w1" / _e1_target(ctx)
        samples: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                for target in (probe, d):
                    t = time.perf_counter()
                    os.stat(target)
                    samples.append(time.perf_counter() - t)
                time.sleep(0.01)

        th = threading.Thread(target=sample)
        th.start()
        a = ctx.mark()
        t0 = time.monotonic()
        try:
            m.sync()
        finally:
            done.set()
            th.join()
        t_sync = time.monotonic() - t0
        counts = ctx.counts(a)
        rss = m.peak_rss_mib()
    finally:
        ctx.unmount(m)
    samples.sort()
    ms = [1000 * x for x in samples]
    ctx.add("S1", f"write+close {count} files, changes held", t_write, "s", seconds=t_write)
    ctx.add(
        "S1", f"  ... sync until the {count} are on the server", t_sync, "s",
        seconds=t_sync, requests=counts, rss_mib=rss,
    )  # fmt: skip
    ctx.add(
        "S1", "  stat while they settle, median", ms[len(ms) // 2], "ms", extra={"samples": len(ms)}
    )
    ctx.add("S1", "  stat while they settle, max", ms[-1], "ms")
