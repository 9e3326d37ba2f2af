"""A mount and a local reference directory driven side by side, for differential tests
(tests/mount/test_random_ops.py): an operation runs on both sides and the outcomes (a
value or an errno) must agree, `check` compares what each side shows, and
`compare_server` what the server holds after a sync. A divergence fails the test with
the last operations and the end of the mount's log."""

from __future__ import annotations

import errno
import os
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from support.mount import MountProc
from support.server import ServerProc


@dataclass
class Pair:
    """The same open on both sides: a descriptor on the mount and one on the reference."""

    id: int
    m: int
    r: int
    flags: int
    label: str  # flags' name and the file's name at open

    @property
    def readable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_WRONLY

    @property
    def writable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_RDONLY

    def __str__(self) -> str:
        return f"h{self.id}({self.label})"


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", fn())
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno or 0, e.errno))


def _short(value: Any) -> str:
    if isinstance(value, bytes):
        head = value[:32]
        return f"<{len(value)} bytes {head!r}{'...' if len(value) > 32 else ''}>"
    if isinstance(value, tuple):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    return repr(value)


def _bytes_diff(m: bytes, r: bytes) -> str:
    n = next((i for i in range(min(len(m), len(r))) if m[i] != r[i]), min(len(m), len(r)))
    return (
        f"mount has {len(m)} bytes, reference {len(r)}; first difference at offset {n}: "
        f"mount {m[n : n + 24]!r} reference {r[n : n + 24]!r}"
    )


class Differential:
    """The two sides (`mroot` on the mount, `rroot` the reference) with the descriptors
    open on both (`pairs`), over the files `names` in the directories `dirs`. A subclass
    chooses the operations; `note` each before running it with `both`."""

    def __init__(
        self,
        mnt: MountProc,
        ref: Path,
        seed: int,
        *,
        names: Sequence[str],
        dirs: Sequence[str],
        history: int,
    ) -> None:
        self.mnt = mnt
        self.mroot = mnt.path
        self.rroot = ref
        self.seed = seed
        self.names = tuple(names)
        self.dirs = tuple(dirs)
        self.check_rng = random.Random(seed + 1)  # so checks do not shift the operations
        self.pairs: list[Pair] = []
        self.index = 0
        self.history: deque[str] = deque(maxlen=history)
        self.stray: list[int] = []  # descriptors opened on one side only, closed at the end

    # ------------------------------------------------------------------ reporting

    def fail(self, what: str) -> NoReturn:
        log_tail = "\n".join(self.mnt.log().splitlines()[-40:])
        ops = "\n".join(f"  {h}" for h in self.history)
        pytest.fail(
            f"mount and reference diverge at operation #{self.index} "
            f"(seed {self.seed}; rerun with REPOMOUNT_OPS_SEED={self.seed}):\n"
            f"  {what}\n"
            f"open descriptors: {', '.join(map(str, self.pairs)) or 'none'}\n"
            f"the last {len(self.history)} operations:\n{ops}\n"
            f"the end of the mount's log:\n{log_tail}",
            pytrace=False,
        )

    def note(self, text: str) -> None:
        self.history.append(f"#{self.index} {text}")

    def both(self, what: str, m: Callable[[], Any], r: Callable[[], Any]) -> tuple[str, Any]:
        """Run one operation on each side; the outcomes (value or errno) must agree."""
        om = outcome(m)
        orr = outcome(r)
        if om != orr:
            if isinstance(om[1], bytes) and isinstance(orr[1], bytes):
                self.fail(f"{what}: {_bytes_diff(om[1], orr[1])}")
            self.fail(f"{what}: mount -> {_short(om)}, reference -> {_short(orr)}")
        return orr

    # ------------------------------------------------------------------ state

    def rpath(self, name: str) -> Path:
        return self.rroot / name

    def mpath(self, name: str) -> Path:
        return self.mroot / name

    def ref_size(self, name: str) -> int | None:
        try:
            return os.stat(self.rpath(name)).st_size
        except FileNotFoundError:
            return None

    def existing(self) -> list[str]:
        return [n for n in self.names if self.rpath(n).exists()]

    # ------------------------------------------------------------------ checking

    def check(self) -> None:
        for d in self.dirs:
            m = sorted(os.listdir(self.mroot / d))
            r = sorted(os.listdir(self.rroot / d))
            if m != r:
                self.fail(f"listing of /{d}: mount {m} != reference {r}")
        for name in self.existing():
            if not os.path.isfile(self.rpath(name)):
                continue
            r = self.rpath(name).read_bytes()
            try:
                m = self.mpath(name).read_bytes()
            except OSError as e:
                self.fail(f"reading {name} by path: {e!r} (reference has {len(r)} bytes)")
            if m != r:
                self.fail(f"content of {name} read by path: {_bytes_diff(m, r)}")
        # Through descriptors: every one's size; the content through those whose file
        # has no name any more, and through one other readable one.
        readable = [p for p in self.pairs if p.readable]
        extra = self.check_rng.choice(readable) if readable else None
        for p in self.pairs:
            om = outcome(lambda p=p: os.fstat(p.m).st_size)
            ref_stat = os.fstat(p.r)
            orr = ("ok", ref_stat.st_size)
            if om != orr:
                self.fail(f"fstat {p}: size on mount {om}, on reference {orr}")
            if p.readable and (p is extra or ref_stat.st_nlink == 0):
                size = orr[1]
                r = os.pread(p.r, size + 1, 0)
                om = outcome(lambda p=p, size=size: os.pread(p.m, size + 1, 0))
                if om[0] != "ok":
                    self.fail(f"pread through {p}: {om}")
                if om[1] != r:
                    self.fail(f"content through {p}: {_bytes_diff(om[1], r)}")

    def compare_server(self, server: ServerProc) -> None:
        expected = {n: self.rpath(n).read_bytes() for n in self.existing()}
        got = server.tree(self.mnt.repo)
        if got != expected:
            diffs = []
            for n in sorted(set(got) | set(expected)):
                if n not in got:
                    diffs.append(f"{n}: missing on the server")
                elif n not in expected:
                    diffs.append(f"{n}: on the server ({len(got[n])} bytes), not in the reference")
                elif got[n] != expected[n]:
                    diffs.append(f"{n}: server vs reference: {_bytes_diff(got[n], expected[n])}")
            self.fail("after repomount sync the server differs:\n    " + "\n    ".join(diffs))

    def close_all(self) -> None:
        for p in self.pairs:
            for fd in (p.m, p.r):
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.pairs.clear()
        for fd in self.stray:
            try:
                os.close(fd)
            except OSError:
                pass
        self.stray.clear()
