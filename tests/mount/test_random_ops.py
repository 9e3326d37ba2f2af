"""A differential random-operations test through a real mount.

A seeded random sequence of file operations over a few names (two at the top, two in a
subdirectory), with several descriptors open at once, is applied both to the mount and to
a local directory (the reference). After every operation the two must agree: the names
in each directory, every file's content read by path, every open descriptor's size
(fstat), and the content seen through each readable descriptor whose file has no name any
more plus one other readable descriptor at random. Results and errno values of the
operations themselves must agree too. At `repomount sync` with nothing open, and at the
end (every descriptor closed, then a sync), the server must hold exactly the reference's
files.

Environment:
  REPOMOUNT_LONG_OPS=N     N operations in all, split over the parametrizations (default
                           20,000: 10,000 each)
  REPOMOUNT_OPS_SEED=S     the seed of every parametrization (default: a fixed one each)
  REPOMOUNT_OPS_HISTORY=N  how many of the last operations a failure shows (default 20)
  REPOMOUNT_OPS_WEIGHTS=   change operations' weights, e.g. "fsync=0,fdatasync=0" to look
    op=W,...               past a known bug (the default mix is what CI runs)

A failure names the seed, the operation's index and the last operations before it.
The two sides and how they are compared: support/differential.py.
"""

from __future__ import annotations

import mmap
import os
import random
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import pytest

from support.differential import Differential, Pair, outcome
from support.mount import MountProc
from support.server import ServerProc

pytestmark = pytest.mark.mount

RUNS = 2  # the parametrizations of test_random_ops below
TOTAL_OPS = int(os.environ.get("REPOMOUNT_LONG_OPS", "8000"))  # CI; raise it for long runs
OPS_PER_RUN = max(1, TOTAL_OPS // RUNS)
SEED = os.environ.get("REPOMOUNT_OPS_SEED")

NAMES = ("a", "b", "sub/c", "sub/d")
DIRS = ("", "sub")
MAX_OPEN = 6
MAX_SIZE = 96 * 1024  # above this, writes and truncates tend to shrink the file
HISTORY = int(os.environ.get("REPOMOUNT_OPS_HISTORY", "20"))

OPEN_FLAGS: list[tuple[str, int]] = [
    ("RDWR", os.O_RDWR),
    ("RDWR|CREAT", os.O_RDWR | os.O_CREAT),
    ("WRONLY|APPEND|CREAT", os.O_WRONLY | os.O_APPEND | os.O_CREAT),
    ("RDWR|APPEND", os.O_RDWR | os.O_APPEND),
    ("RDWR|TRUNC", os.O_RDWR | os.O_TRUNC),
    ("WRONLY|TRUNC|CREAT", os.O_WRONLY | os.O_TRUNC | os.O_CREAT),
    ("RDWR|TRUNC|CREAT", os.O_RDWR | os.O_TRUNC | os.O_CREAT),
    ("WRONLY", os.O_WRONLY),
    ("RDONLY", os.O_RDONLY),
    ("RDWR|CREAT|EXCL", os.O_RDWR | os.O_CREAT | os.O_EXCL),
]

# operation -> weight
WEIGHTS: dict[str, float] = {
    "open": 12,
    "close": 8,
    "write": 12,
    "write_cur": 6,
    "pwrite": 8,
    "read": 5,
    "read_cur": 3,
    "ftruncate": 5,
    "truncate": 3,
    "fsync": 1,  # each waits for the server
    "fdatasync": 0.6,
    "mmap_read": 3,
    "mmap_write": 1.5,  # msync waits for the server
    "rename": 4,
    "unlink": 4,
    "sync": 0.06,
    "pause": 0.03,  # let the default flush timer (0.5 s of quiet) fire mid-sequence
}
for _item in filter(None, os.environ.get("REPOMOUNT_OPS_WEIGHTS", "").split(",")):
    _op, _, _weight = _item.partition("=")
    if _op.strip() not in WEIGHTS:
        raise ValueError(f"REPOMOUNT_OPS_WEIGHTS: no operation {_op!r} (known: {list(WEIGHTS)})")
    WEIGHTS[_op.strip()] = float(_weight)


class Runner(Differential):
    """The random operations: each picked by its weight in WEIGHTS, run on both sides
    and checked (`step`)."""

    def __init__(self, mnt: MountProc, ref: Path, seed: int) -> None:
        super().__init__(mnt, ref, seed, names=NAMES, dirs=DIRS, history=HISTORY)
        self.rng = random.Random(seed)
        self.next_id = 1
        self.forced: deque[tuple[str, Pair]] = deque()
        self.counts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}  # per operation kind, checks included
        self.syncs_checked = 0

    # ------------------------------------------------------------------ random sizes and contents

    def size_for_write(self, size: int) -> int:
        """An offset: mostly inside, sometimes at or past the end (a hole)."""
        roll = self.rng.random()
        if roll < 0.6 and size:
            return self.rng.randrange(size)
        if roll < 0.8:
            return size
        return size + self.rng.randrange(1, 9000)

    def data(self) -> bytes:
        roll = self.rng.random()
        if roll < 0.7:
            n = self.rng.randint(1, 300)
        elif roll < 0.95:
            n = self.rng.randint(300, 9000)
        else:
            n = self.rng.randint(9000, 140_000)  # more than one FUSE write request
        return self.rng.randbytes(n)

    def new_size(self, size: int) -> int:
        if size > MAX_SIZE or self.rng.random() < 0.5:
            return self.rng.randint(0, size) if size else 0
        return size + self.rng.randint(1, 20_000)

    # ------------------------------------------------------------------ operations

    def pick_pair(self, want: Callable[[Pair], bool] = lambda p: True) -> Pair | None:
        choices = [p for p in self.pairs if want(p)]
        return self.rng.choice(choices) if choices else None

    def op_open(self) -> None:
        name = self.rng.choice(NAMES)
        label, flags = self.rng.choice(OPEN_FLAGS)
        self.note(f"open {name} {label}")
        om = outcome(lambda: os.open(self.mpath(name), flags, 0o644))
        orr = outcome(lambda: os.open(self.rpath(name), flags, 0o644))
        if om[0] == "ok" and orr[0] == "ok":
            pair = Pair(self.next_id, om[1], orr[1], flags, f"{label} {name}")
            self.next_id += 1
            self.pairs.append(pair)
            self.history[-1] += f" -> {pair}"
            return
        for o in (om, orr):
            if o[0] == "ok":
                self.stray.append(o[1])
        if om != orr:
            self.fail(f"open {name} {label}: mount -> {om}, reference -> {orr}")
        self.history[-1] += f" -> {orr[1]}"

    def op_close(self, p: Pair) -> None:
        self.note(f"close {p}")
        self.pairs.remove(p)
        self.both(f"close {p}", lambda: os.close(p.m), lambda: os.close(p.r))

    def op_write(self, p: Pair) -> None:
        size = os.fstat(p.r).st_size
        off = self.size_for_write(size)
        data = self.data()
        self.note(f"lseek+write {p} off={off} len={len(data)} (size {size})")

        def go(fd: int) -> tuple[int, int]:
            os.lseek(fd, off, os.SEEK_SET)
            n = os.write(fd, data)
            return n, os.lseek(fd, 0, os.SEEK_CUR)

        self.both(f"write {p}", lambda: go(p.m), lambda: go(p.r))

    def op_write_cur(self, p: Pair) -> None:
        data = self.data()
        self.note(f"write {p} at its offset len={len(data)}")

        def go(fd: int) -> tuple[int, int]:
            n = os.write(fd, data)
            return n, os.lseek(fd, 0, os.SEEK_CUR)

        self.both(f"write {p}", lambda: go(p.m), lambda: go(p.r))

    def op_pwrite(self, p: Pair) -> None:
        size = os.fstat(p.r).st_size
        off = self.size_for_write(size)
        data = self.data()
        self.note(f"pwrite {p} off={off} len={len(data)} (size {size})")
        self.both(
            f"pwrite {p}", lambda: os.pwrite(p.m, data, off), lambda: os.pwrite(p.r, data, off)
        )

    def op_read(self, p: Pair) -> None:
        size = os.fstat(p.r).st_size
        off = self.rng.randint(0, size + 100)
        n = self.rng.choice((1, 100, 4096, 70_000, size + 10))
        self.note(f"pread {p} off={off} n={n} (size {size})")
        self.both(f"pread {p}", lambda: os.pread(p.m, n, off), lambda: os.pread(p.r, n, off))

    def op_read_cur(self, p: Pair) -> None:
        n = self.rng.choice((1, 100, 4096, 70_000))
        self.note(f"read {p} at its offset n={n}")

        def go(fd: int) -> tuple[bytes, int]:
            data = os.read(fd, n)
            return data, os.lseek(fd, 0, os.SEEK_CUR)

        self.both(f"read {p}", lambda: go(p.m), lambda: go(p.r))

    def op_ftruncate(self, p: Pair) -> None:
        size = os.fstat(p.r).st_size
        new = self.new_size(size)
        self.note(f"ftruncate {p} {size} -> {new}")
        self.both(f"ftruncate {p}", lambda: os.ftruncate(p.m, new), lambda: os.ftruncate(p.r, new))

    def op_truncate(self) -> None:
        name = self.rng.choice(NAMES)
        size = self.ref_size(name) or 0
        new = self.new_size(size)
        self.note(f"truncate {name} {size} -> {new}")
        self.both(
            f"truncate {name}",
            lambda: os.truncate(self.mpath(name), new),
            lambda: os.truncate(self.rpath(name), new),
        )

    def op_fsync(self, p: Pair) -> None:
        self.note(f"fsync {p}")
        self.both(f"fsync {p}", lambda: os.fsync(p.m), lambda: os.fsync(p.r))

    def op_fdatasync(self, p: Pair) -> None:
        self.note(f"fdatasync {p}")
        self.both(f"fdatasync {p}", lambda: os.fdatasync(p.m), lambda: os.fdatasync(p.r))

    def op_mmap_read(self) -> None:
        p = self.pick_pair(lambda p: p.readable and os.fstat(p.r).st_size > 0)
        temp = None
        if p is None:
            names = [n for n in self.existing() if self.ref_size(n)]
            if not names:
                self.note("mmap read: no non-empty file")
                return
            name = self.rng.choice(names)
            temp = Pair(0, os.open(self.mpath(name), os.O_RDONLY), -1, os.O_RDONLY, name)
            temp.r = os.open(self.rpath(name), os.O_RDONLY)
            p = temp
        try:
            size = os.fstat(p.r).st_size
            msize = os.fstat(p.m).st_size
            start = self.rng.randrange(size)
            end = self.rng.randint(start + 1, size)
            self.note(f"mmap read {p} [{start}:{end}] (size {size})")
            if msize != size:  # mapping past the end would be SIGBUS, not a report
                self.fail(f"mmap read {p}: size on mount {msize}, on reference {size}")

            def go(fd: int) -> bytes:
                with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
                    return mm[start:end]

            self.both(f"mmap read {p}", lambda: go(p.m), lambda: go(p.r))
        finally:
            if temp is not None:
                os.close(temp.m)
                os.close(temp.r)

    def op_mmap_write(self, p: Pair) -> None:
        size = os.fstat(p.r).st_size
        msize = os.fstat(p.m).st_size
        if size == 0:
            self.note(f"mmap write {p}: empty, pwrite instead")
            self.op_pwrite(p)
            return
        start = self.rng.randrange(size)
        data = self.rng.randbytes(self.rng.randint(1, min(size - start, 20_000)))
        self.note(f"mmap write {p} at {start} len={len(data)} + msync(MS_SYNC) (size {size})")
        if msize != size:
            self.fail(f"mmap write {p}: size on mount {msize}, on reference {size}")

        def go(fd: int) -> None:
            with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mm:
                mm[start : start + len(data)] = data
                mm.flush()  # msync(MS_SYNC)

        self.both(f"mmap write {p}", lambda: go(p.m), lambda: go(p.r))
        # Then the same descriptor: a write and an ftruncate, each checked.
        self.forced.append(("pwrite", p))
        self.forced.append(("ftruncate", p))

    def op_rename(self) -> None:
        src = self.rng.choice(self.existing() or NAMES)
        dst = self.rng.choice([n for n in NAMES if n != src])
        self.note(
            f"rename {src} -> {dst}{' (over an existing file)' if self.rpath(dst).exists() else ''}"
        )
        self.both(
            f"rename {src} {dst}",
            lambda: os.rename(self.mpath(src), self.mpath(dst)),
            lambda: os.rename(self.rpath(src), self.rpath(dst)),
        )

    def op_unlink(self) -> None:
        name = self.rng.choice(self.existing() or NAMES)
        self.note(f"unlink {name}")
        self.both(
            f"unlink {name}",
            lambda: os.unlink(self.mpath(name)),
            lambda: os.unlink(self.rpath(name)),
        )

    def op_sync(self, server: ServerProc) -> None:
        self.note(f"repomount sync ({len(self.pairs)} descriptor(s) open)")
        try:
            self.mnt.sync()
        except AssertionError as e:
            self.fail(f"repomount sync failed: {e}")
        if not self.pairs:  # everything is closed: the server must hold the reference
            self.compare_server(server)
            self.syncs_checked += 1

    def op_pause(self) -> None:
        self.note("sleep 0.6 s")
        time.sleep(0.6)  # not a wait: an op of its own, letting the mount's timers fire

    # ------------------------------------------------------------------ driving

    def step(self, server: ServerProc) -> None:
        started = time.monotonic()
        kind = self._step(server)
        self.check()
        self.seconds[kind] = self.seconds.get(kind, 0.0) + time.monotonic() - started

    def _step(self, server: ServerProc) -> str:
        """One operation; returns its kind."""
        if self.forced:
            op, p = self.forced.popleft()
            if p in self.pairs:
                self.counts[op] = self.counts.get(op, 0) + 1
                getattr(self, f"op_{op}")(p)
                return op
        ops = list(WEIGHTS)
        op = self.rng.choices(ops, weights=[WEIGHTS[o] for o in ops])[0]
        pair_ops = {
            "close": lambda p: True,
            "write": lambda p: True,
            "write_cur": lambda p: True,
            "pwrite": lambda p: True,
            "read": lambda p: True,
            "read_cur": lambda p: True,
            "ftruncate": lambda p: True,
            "fsync": lambda p: True,
            "fdatasync": lambda p: True,
            "mmap_write": lambda p: p.flags & os.O_ACCMODE == os.O_RDWR,
        }
        if op == "open" and len(self.pairs) >= MAX_OPEN:
            op = "close"
        if op in pair_ops:
            p = self.pick_pair(pair_ops[op])
            if p is None:
                op = "open"
            else:
                self.counts[op] = self.counts.get(op, 0) + 1
                getattr(self, f"op_{op}")(p)
                return op
        self.counts[op] = self.counts.get(op, 0) + 1
        if op == "sync":
            self.op_sync(server)
        else:
            getattr(self, f"op_{op}")()
        return op


@pytest.mark.timeout(max(600, OPS_PER_RUN // 10))
@pytest.mark.parametrize(
    "extra_args",
    [
        pytest.param((), id="default-timings"),
        pytest.param(("--flush-delay", "0"), id="flush-delay-0"),
    ],
)
def test_random_ops(
    server: ServerProc, mount_factory, tmp_path: Path, extra_args: tuple[str, ...], request
) -> None:
    index = request.node.callspec.indices["extra_args"]
    seed = int(SEED) if SEED is not None else 7919 * (index + 1)
    print(f"seed {seed}, {OPS_PER_RUN} operations, mount args {list(extra_args)}")
    mnt: MountProc = mount_factory(extra_args=list(extra_args))
    ref = tmp_path / "ref"
    ref.mkdir()
    os.mkdir(mnt.path / "sub")
    os.mkdir(ref / "sub")
    runner = Runner(mnt, ref, seed)
    started = time.monotonic()
    try:
        for i in range(OPS_PER_RUN):
            runner.index = i
            runner.step(server)
        runner.index = OPS_PER_RUN
        runner.note("close every descriptor")
        for p in list(runner.pairs):
            runner.op_close(p)
        runner.check()
        runner.op_sync(server)  # compares the server with the reference
    finally:
        runner.close_all()
    elapsed = time.monotonic() - started
    print(
        f"{OPS_PER_RUN} operations in {elapsed:.1f} s; the server compared after "
        f"{runner.syncs_checked} sync(s)"
    )
    for op in sorted(runner.counts):
        print(f"  {op:10} {runner.counts[op]:6} {runner.seconds.get(op, 0.0):6.1f} s")
