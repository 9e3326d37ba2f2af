"""Which pending changes may go now, in which groups, and what each expected: the
flusher's pure decisions (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable

from repomount.paths import ancestors_of
from repomount.remotes.base import ExpectT
from repomount.vfs.coalesce import Planned
from repomount.vfs.journal import Journal
from repomount.vfs.records import Record


def ready(records: list[Record], now: float) -> list[Record]:
    """Pending records that may go now: not backing off, and not behind a record of
    an overlapping path (the same, above or below) that is backing off or held, so
    one failing change holds back only what depends on it."""
    out: list[Record] = []
    blocked = _Paths()  # those of records that wait
    for rec in records:
        waits = rec.state == "held" or rec.next_try > now
        if not waits and blocked:  # (nothing waits, the common case: no path work)
            waits = blocked.overlap(rec)
        if waits:
            blocked.add(rec)
        elif rec.state == "pending":
            out.append(rec)
    return out


def behind_held(records: list[Record]) -> dict[int, Record]:
    """The pending records that wait behind a held one (an overlapping path, as `ready`
    holds them back, in turn), each with a held record it waits for: until that one
    is settled they cannot go, so a wait for them is a wait for it. One pass, each
    path looked up with its ancestors (not against every waiting record: a held mkdir
    with thousands of writes below and beside it took seconds)."""
    out: dict[int, Record] = {}
    at: dict[str, Record] = {}  # a waiting path -> the held record it waits for
    above: dict[str, Record] = {}  # an ancestor of a waiting path -> the same
    for rec in records:
        blocker = rec if rec.state == "held" else None
        if blocker is None and at:
            for p in rec.paths():
                blocker = at.get(p) or above.get(p)
                blocker = blocker or next(filter(None, map(at.get, ancestors_of(p))), None)
                if blocker is not None:
                    break
        if blocker is None:
            continue
        if rec.state == "pending":
            out[rec.id] = blocker
        for p in rec.paths():
            at.setdefault(p, blocker)
            for a in ancestors_of(p):
                above.setdefault(a, blocker)
    return out


def with_blockers(records: list[Record], ids: Iterable[int]) -> list[int]:
    """`ids`, and every record before them that `ready` would hold them back behind
    (an overlapping path: the same, above or below), and those records' own, in turn."""
    wanted = set(ids)
    out: list[int] = []
    needed = _Paths()
    for rec in reversed(records):  # (a record waits only behind earlier ones)
        if rec.id in wanted or needed.overlap(rec):
            out.append(rec.id)
            needed.add(rec)
    return out


class _Paths:
    """The paths of some records, and every ancestor of those: whether another
    record's path is one of them, lies below one, or lies above one."""

    def __init__(self) -> None:
        self.paths: set[str] = set()
        self.above: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.paths)

    def add(self, rec: Record) -> None:
        for p in rec.paths():
            self.paths.add(p)
            self.above.update(ancestors_of(p))

    def overlap(self, rec: Record) -> bool:
        return any(_overlaps(p, self.paths, self.above) for p in rec.paths())


def expected_at(op: Planned, path: str, journal: Journal) -> set[ExpectT]:
    """What `op` expected the remote to hold at `path`: as planned, and as its records
    say now (an earlier op of the same batch that landed rebased them)."""
    olds: set[ExpectT] = {op.expect_to if op.op == "rename" else op.expect}
    for i in op.ids:
        rec = journal.get(i)
        if rec is not None and path in rec.paths():
            olds.add(rec.expect_to if rec.op == "rename" and rec.dst == path else rec.expect)
    if op.then_delete is not None:
        # The write half of a rename whose old name the remote has: the rename record
        # (its delete half's) holds what was expected at the new name, rebased by an
        # earlier op of the batch that made something there (a symlink renamed to the
        # name the file then replaced): without it that op's version stayed the file's
        # base, and its next change met its own write as a conflict.
        rec = journal.get(op.then_delete)
        if rec is not None and rec.op == "rename" and rec.dst == path:
            olds.add(rec.expect_to)
    return olds


def _overlaps(path: str, blocked: set[str], above: set[str]) -> bool:
    """Whether `path` is a blocked path, lies below one, or lies above one."""
    return path in blocked or path in above or any(a in blocked for a in ancestors_of(path))


def runs(ops: list[Planned]) -> list[list[Planned]]:
    """Split into groups that may go in parallel: consecutive writes of distinct paths;
    every namespace op alone, in order."""
    groups: list[list[Planned]] = []
    current: list[Planned] = []
    seen: set[str] = set()
    for op in ops:
        if op.op == "write" and op.path not in seen:
            current.append(op)
            seen.add(op.path)
            continue
        if current:
            groups.append(current)
            current, seen = [], set()
        if op.op == "write":
            current, seen = [op], {op.path}
        else:
            groups.append([op])
    if current:
        groups.append(current)
    return groups
