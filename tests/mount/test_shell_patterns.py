"""Real programs' write patterns on a mount, each checked against the same commands run in
a local directory, then on the server after `repomount sync`.

A script is run by `bash -c` twice: with the mount as its working directory and with a
local directory (the reference). `@SYNC@` in a script is `repomount sync` of the mount on
the mount's run (a failed sync ends the script with status 99) and `:` (nothing) on the
reference's. Exit status and standard output must agree, and so must every file; after a
sync the server holds the reference's files.
"""

from __future__ import annotations

import mmap
import os
import shlex
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.mount import MountProc
from support.server import ServerProc

pytestmark = pytest.mark.mount


def sync_command(mnt: MountProc) -> str:
    """`repomount sync` of the mount, quiet; its failure ends the script with status 99."""
    cmd = shlex.join([sys.executable, "-m", "repomount", "sync", str(mnt.path)])
    return f"{{ {cmd} >/dev/null || exit 99; }}"


def bash(
    script: str, cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def files(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every regular file under root (relative path -> content), minus the `skip` trees."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [
            d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in skip
        ]
        for name in filenames:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            out[rel] = Path(dirpath, name).read_bytes()
    return out


def same(mnt: MountProc, ref: Path, script: str, timeout: float = 60) -> str:
    """Run `script` on both sides; they must agree. Returns its standard output."""
    env = {**mnt.env, "LC_ALL": "C"}
    m = bash(script.replace("@SYNC@", sync_command(mnt)), mnt.path, env, timeout)
    r = bash(script.replace("@SYNC@", ":"), ref, env, timeout)
    assert r.returncode == 0, f"the script fails on a local directory too: {r.stderr}"
    assert (m.returncode, m.stdout) == (r.returncode, r.stdout), (
        f"{script!r}\n mount: exit {m.returncode}, stdout {m.stdout!r}, stderr {m.stderr!r}\n"
        f" local: exit {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr!r}\n"
        f"mount log:\n{mnt.log()[-3000:]}"
    )
    return r.stdout


def same_files(mnt: MountProc, ref: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    expected = files(ref, skip)
    assert files(mnt.path, skip) == expected
    return expected


def on_server(server: ServerProc, mnt: MountProc, expected: dict[str, bytes]) -> None:
    """After `repomount sync`, the server holds exactly `expected`."""
    mnt.sync()
    assert server.tree(mnt.repo) == expected


@pytest.fixture
def ref(tmp_path: Path) -> Path:
    d = tmp_path / "ref"
    d.mkdir()
    return d


# ---------------------------------------------------------------------- the shell


@pytest.mark.timeout(60)
def test_echo_then_append_at_once(server: ServerProc, mnt: MountProc, ref: Path) -> None:
    assert same(mnt, ref, "echo a > f; echo b >> f; cat f") == "a\nb\n"
    expected = same_files(mnt, ref)
    assert expected == {"f": b"a\nb\n"}
    on_server(server, mnt, expected)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("script", "output"),
    [
        pytest.param("(sleep 1; echo x) > f", b"x\n", id="subshell"),
        pytest.param(
            "bash -c 'echo one; /bin/true; sleep 2; echo two' > f", b"one\ntwo\n", id="child"
        ),
    ],
)
def test_output_redirected_while_forking(
    server: ServerProc, mnt: MountProc, ref: Path, script: str, output: bytes
) -> None:
    same(mnt, ref, f"{script}; cat f")
    expected = same_files(mnt, ref)
    assert expected == {"f": output}
    on_server(server, mnt, expected)


@pytest.mark.timeout(90)
def test_exec_append_descriptor_around_a_sync(
    server: ServerProc, mnt: MountProc, ref: Path
) -> None:
    script = "exec 3>>f; echo 1 >&3; @SYNC@; echo 2 >&3; @SYNC@; echo 3 >&3; exec 3>&-; cat f"
    assert same(mnt, ref, script) == "1\n2\n3\n"
    expected = same_files(mnt, ref)
    on_server(server, mnt, expected)
    assert expected == {"f": b"1\n2\n3\n"}


@pytest.mark.timeout(90)
def test_append_right_after_a_sync(server: ServerProc, mnt: MountProc, ref: Path) -> None:
    script = "echo a > f; @SYNC@; echo b >> f; cat f; @SYNC@; echo c >> f; cat f"
    assert same(mnt, ref, script) == "a\nb\na\nb\nc\n"
    expected = same_files(mnt, ref)
    on_server(server, mnt, expected)
    assert expected == {"f": b"a\nb\nc\n"}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flush_delay", ["0", "0.5"])
def test_rename_right_after_close_while_uploading(
    server: ServerProc, mount_factory, ref: Path, tmp_path: Path, flush_delay: str
) -> None:
    mnt: MountProc = mount_factory(extra_args=["--flush-delay", flush_delay])
    src = tmp_path / "src.bin"
    data = os.urandom(8 << 20)
    src.write_bytes(data)
    script = f"cat {src} > big.tmp && mv big.tmp big && cmp {src} big && ls"
    assert same(mnt, ref, script) == "big\n"
    expected = same_files(mnt, ref)
    assert expected == {"big": data}
    on_server(server, mnt, expected)


@pytest.mark.timeout(60)
def test_truncate_to_grow_after_echo(server: ServerProc, mnt: MountProc, ref: Path) -> None:
    same(mnt, ref, "echo hello > t; truncate -s 20 t; od -c t")
    expected = same_files(mnt, ref)
    assert expected == {"t": b"hello\n" + b"\0" * 14}
    on_server(server, mnt, expected)


@pytest.mark.timeout(60)
def test_overwrite_first_byte_right_after_create(
    server: ServerProc, mnt: MountProc, ref: Path
) -> None:
    script = "echo hello > t; python3 -c \"open('t', 'r+').write('J')\"; cat t"
    assert same(mnt, ref, script) == "Jello\n"
    expected = same_files(mnt, ref)
    on_server(server, mnt, expected)
    assert expected == {"t": b"Jello\n"}


@pytest.mark.timeout(120)
def test_git_branch_and_modify(server: ServerProc, mnt: MountProc, ref: Path) -> None:
    git = (
        "git -c user.name=t -c user.email=t@example.com -c init.defaultBranch=main "
        "-c core.hooksPath=/dev/null"
    )
    script = textwrap.dedent(f"""\
        set -e
        export GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent
        {git} init -q .
        echo hi > f
        {git} add f
        {git} commit -q -m one
        {git} checkout -q -b two
        echo ho >> f
        {git} status --porcelain
        cat f
        """)
    assert same(mnt, ref, script) == " M f\nhi\nho\n"
    mnt.sync()
    tree = server.tree(mnt.repo)
    assert tree["f"] == b"hi\nho\n"
    assert tree[".git/HEAD"] == b"ref: refs/heads/two\n"


# ---------------------------------------------------------------------- SQLite


SQLITE_TRANSACTIONS = 100
SQLITE_ROWS_PER_TRANSACTION = 10


def _sqlite_fill(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
        n = 0
        for _ in range(SQLITE_TRANSACTIONS):
            db.execute("BEGIN")
            for _ in range(SQLITE_ROWS_PER_TRANSACTION):
                db.execute(
                    "INSERT INTO t (k, v) VALUES (?, ?)", (f"key{n}", bytes([n % 256]) * 300)
                )
                n += 1
            db.execute("COMMIT")
    finally:
        db.close()


def _sqlite_state(path: Path) -> tuple[str, int, int]:
    db = sqlite3.connect(path)
    try:
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
        count = db.execute("SELECT count(*) FROM t").fetchone()[0]
        total = db.execute("SELECT sum(length(v)) + sum(id) FROM t").fetchone()[0]
        return ok, count, total
    finally:
        db.close()


@pytest.mark.timeout(240)
def test_sqlite_survives_a_remount(server: ServerProc, mount_factory, ref: Path) -> None:
    mnt: MountProc = mount_factory()
    _sqlite_fill(ref / "db.sqlite")
    want = _sqlite_state(ref / "db.sqlite")
    rows = SQLITE_TRANSACTIONS * SQLITE_ROWS_PER_TRANSACTION
    assert want[:2] == ("ok", rows)
    _sqlite_fill(mnt.path / "db.sqlite")
    assert _sqlite_state(mnt.path / "db.sqlite") == want
    assert sorted(os.listdir(mnt.path)) == sorted(os.listdir(ref)) == ["db.sqlite"]
    mnt.sync()
    r = mnt.unmount()
    assert r.returncode == 0, r.stderr
    again: MountProc = mount_factory(mnt.repo, create=False)
    assert _sqlite_state(again.path / "db.sqlite") == want
    assert sorted(os.listdir(again.path)) == ["db.sqlite"]
    assert list(server.tree(mnt.repo)) == ["db.sqlite"]


# ---------------------------------------------------------------------- descriptors


def _mmap_then_write_and_truncate(path: Path) -> bytes:
    with open(path, "wb") as f:
        f.write(b"0123456789" * 1000)  # 10,000 bytes
    fd = os.open(path, os.O_RDWR)
    try:
        with mmap.mmap(fd, 10_000, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mm:
            mm[0:5] = b"ABCDE"
            mm[9_995:10_000] = b"VWXYZ"
            mm.flush()  # msync(MS_SYNC)
        assert os.pwrite(fd, b"written", 100) == 7
        os.ftruncate(fd, 5_000)
        assert os.pwrite(fd, b"end", 5_000) == 3
        os.ftruncate(fd, 6_000)
    finally:
        os.close(fd)
    return path.read_bytes()


@pytest.mark.timeout(60)
def test_mmap_msync_then_write_and_ftruncate(server: ServerProc, mnt: MountProc, ref: Path) -> None:
    want = _mmap_then_write_and_truncate(ref / "m.bin")
    assert want[:5] == b"ABCDE" and want[100:107] == b"written" and len(want) == 6_000
    assert want[5_000:5_003] == b"end" and want[5_003:] == b"\0" * 997
    assert _mmap_then_write_and_truncate(mnt.path / "m.bin") == want
    expected = same_files(mnt, ref)
    on_server(server, mnt, expected)


def _write_fsync_write(path: Path) -> bytes:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert os.write(fd, b"first part\n") == 11
        os.fsync(fd)
        assert os.write(fd, b"second part\n") == 12
        os.fsync(fd)
        assert os.write(fd, b"third\n") == 6
        os.ftruncate(fd, 20)
        assert os.pread(fd, 100, 0) == b"first part\nsecond pa"
    finally:
        os.close(fd)
    return path.read_bytes()


@pytest.mark.timeout(60)
def test_fsync_then_more_writes_on_the_same_descriptor(
    server: ServerProc, mnt: MountProc, ref: Path
) -> None:
    want = _write_fsync_write(ref / "f.txt")
    assert want == b"first part\nsecond pa"
    assert _write_fsync_write(mnt.path / "f.txt") == want
    expected = same_files(mnt, ref)
    on_server(server, mnt, expected)
