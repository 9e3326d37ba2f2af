"""A journal row as the vfs reads it (`Record`), and how its precondition is stored.
Pure: coalescing, scheduling and status read records without the database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from repomount.remotes.base import Expect, ExpectT

Op = Literal["write", "delete", "rename", "mkdir", "symlink"]
State = Literal["pending", "held"]
HeldFor = Literal["conflict", "refused"]  # lost a conflict (policy fail) / the remote said no


def encode_expect(e: ExpectT) -> str:
    return e.value if isinstance(e, Expect) else "v:" + e


def decode_expect(s: str) -> ExpectT:
    return s[2:] if s.startswith("v:") else Expect(s)


@dataclass(frozen=True)
class Record:
    id: int
    op: Op
    path: str
    dst: str | None = None  # rename target
    blob: str | None = None  # file name under blobs/ (writes)
    mode: int | None = None
    expect: ExpectT = Expect.ANY  # for rename: the source's version
    expect_to: ExpectT = Expect.ANY  # rename only: what the target must be
    key: str = ""
    created: float = 0.0
    tries: int = 0
    last_error: str | None = None
    state: State = "pending"
    target: str | None = None  # symlink: where it points
    next_try: float = 0.0  # wall-clock time before which a retry is not sent
    held_for: HeldFor | None = None  # why a held change is held
    mtime_ns: int | None = None  # a write's modification time (sent where the remote keeps it)

    def paths(self) -> tuple[str, ...]:
        return (self.path, self.dst) if self.dst is not None else (self.path,)
