"""Coalescing: the shortest list of changes with the same effect as the journal's.

Pure logic over journal records, in order:
- repeated writes of a path -> the last content, with the first one's precondition;
- create then delete -> nothing; write then delete -> a delete of the original;
- write then rename -> a write at the new name (plus a delete of the old name if it
  existed remotely): this is how editors' and rsync's temp files never reach the remote.
A merge only looks back at the latest operation touching the same path; a rename or
delete of a directory is a barrier for everything below it, so order never breaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from repomount.paths import ancestors_of, at_or_under
from repomount.remotes.base import Expect, ExpectT
from repomount.vfs.records import Record


@dataclass
class Planned:
    """One operation to send, standing for the journal records in `ids`."""

    op: str  # write | delete | rename | mkdir | symlink
    path: str
    ids: list[int]
    dst: str | None = None
    blob: str | None = None
    target: str | None = None  # symlink
    mode: int | None = None
    mtime_ns: int | None = None  # a write's: the newest record's
    expect: ExpectT = Expect.ANY
    expect_to: ExpectT = Expect.ANY
    key: str = ""  # the idempotency key of the newest record it stands for
    blobs: list[str] = field(default_factory=list)  # every content file it supersedes
    # A delete that stands for a rename record whose content went out as a write at
    # the new name: once that write landed, the record is rewritten as this delete.
    rename_record: int | None = None
    then_delete: int | None = None  # on the write half: that record's id
    # Whether to send `expect` / `expect_to` (see _chain_preconditions); they stay
    # recorded either way, since the journal rebases later records by them.
    check: bool = True
    check_to: bool = True

    def sent_expect(self) -> ExpectT:
        return self.expect if self.check else Expect.ANY

    def sent_expect_to(self) -> ExpectT:
        return self.expect_to if self.check_to else Expect.ANY


@dataclass
class Plan:
    ops: list[Planned]
    dropped: list[int]  # records that cancelled out: done without a request


def coalesce(records: list[Record]) -> Plan:
    out: list[Planned | None] = []
    latest: dict[str, int] = {}  # path -> index in `out` of the latest op touching it
    has_below: set[str] = set()  # every proper ancestor of a key of `latest`
    at: dict[str, list[int]] = {}  # path -> indices in `out` of ops naming it (src or dst)
    dropped: list[int] = []

    def forget_under(path: str) -> None:
        if path not in has_below:
            return  # (a file, or a directory with nothing planned below: no scan)
        prefix = path + "/"
        for p in [p for p in latest if p.startswith(prefix)]:
            del latest[p]

    def latest_write(path: str) -> Planned | None:
        """The latest op of `path` if it gives it content (a write or a symlink)."""
        return latest_op(path, "write") or latest_op(path, "symlink")

    def latest_op(path: str, kind: str) -> Planned | None:
        i = latest.get(path)
        if i is None:
            return None
        op = out[i]
        return op if op is not None and op.op == kind and op.path == path else None

    def created_here(op: Planned, i: int) -> bool:
        """Whether `op` (at index i) made its path exist: the remote had nothing there
        before our pending changes, and nothing is there after the plan's earlier ops."""
        return op.expect == Expect.ABSENT and not exists_before(op.path, i)

    def exists_before(path: str, bound: int) -> bool:
        """Whether `path` exists once the plan's ops before index `bound` are applied,
        as far as they decide it (else: no, the remote had nothing there, as the
        caller's precondition says). Walks back through the latest op at the path or
        above it; a directory renamed onto an ancestor brings what was at the old name,
        and nothing else (a remote file there would be the node's base, not absent)."""
        p = path
        while True:
            earlier = [
                j for a in (p, *ancestors_of(p)) for j in at.get(a, ()) if j < bound and out[j]
            ]
            if not earlier:
                return False
            bound = max(earlier)
            e = out[bound]
            assert e is not None
            if e.op == "rename":
                assert e.dst is not None
                if p == e.dst:
                    return True  # moved here (a rename's source exists)
                if at_or_under(p, e.dst):
                    p = e.path + p[len(e.dst) :]  # a directory above came from there
                elif at_or_under(p, e.path):
                    return False  # moved away
            elif e.path == p:
                return e.op != "delete"
            elif e.op == "delete":  # a directory above it went
                return False

    def push(op: Planned, *paths: str) -> None:
        out.append(op)
        for p in paths:
            latest[p] = len(out) - 1
            has_below.update(ancestors_of(p))
        for named in (op.path, op.dst):
            if named is not None:
                at.setdefault(named, []).append(len(out) - 1)

    for rec in records:
        if rec.op in ("write", "symlink"):  # both give a path its content
            prev = latest_write(rec.path)
            if prev is not None:
                prev.ids.append(rec.id)
                if rec.blob:
                    prev.blobs.append(rec.blob)
                prev.op, prev.blob, prev.target = rec.op, rec.blob, rec.target
                prev.mode, prev.mtime_ns, prev.key = rec.mode, rec.mtime_ns, rec.key
                continue
            gone = latest_op(rec.path, "delete")
            if gone is not None and gone.expect != Expect.ANY and gone.rename_record is None:
                # delete + create of a file (an editor's save): one write over the old one
                gone.op, gone.blob, gone.target = rec.op, rec.blob, rec.target
                gone.mode, gone.mtime_ns, gone.key = rec.mode, rec.mtime_ns, rec.key
                gone.ids.append(rec.id)
                gone.blobs = [rec.blob] if rec.blob else []
                continue
            push(
                Planned(rec.op, rec.path, [rec.id], blob=rec.blob, target=rec.target,
                        mode=rec.mode, mtime_ns=rec.mtime_ns, expect=rec.expect, key=rec.key,
                        blobs=[rec.blob] if rec.blob else []),
                rec.path,
            )  # fmt: skip
        elif rec.op == "delete":
            prev = latest_write(rec.path)
            if prev is not None:
                i = latest.pop(rec.path)
                if created_here(prev, i):
                    out[i] = None  # created and deleted here: the remote never sees it
                    dropped.extend([*prev.ids, rec.id])
                else:
                    out[i] = Planned("delete", rec.path, [*prev.ids, rec.id],
                                     expect=prev.expect, key=rec.key, blobs=prev.blobs)  # fmt: skip
                    latest[rec.path] = i
                continue
            forget_under(rec.path)
            push(Planned("delete", rec.path, [rec.id], expect=rec.expect, key=rec.key), rec.path)
        elif rec.op == "rename":
            assert rec.dst is not None
            prev = latest_write(rec.path)
            target = latest_write(rec.dst)
            if prev is not None:
                i = latest.pop(rec.path)
                expect_to = rec.expect_to
                ids = [*prev.ids, rec.id]
                blobs = list(prev.blobs)
                if target is not None:  # the content written to dst before is replaced
                    j = latest.pop(rec.dst)
                    expect_to = target.expect
                    ids = target.ids + ids
                    blobs = target.blobs + blobs
                    out[j] = None
                first = created_here(prev, i)
                out[i] = None
                if first:  # the old name never reached the remote
                    push(Planned(prev.op, rec.dst, ids, blob=prev.blob, target=prev.target,
                                 mode=prev.mode, mtime_ns=prev.mtime_ns, expect=expect_to,
                                 key=rec.key, blobs=blobs), rec.dst)  # fmt: skip
                    continue
                # The old name exists remotely: write the new one, then delete the old.
                ids.remove(rec.id)
                push(Planned(prev.op, rec.dst, ids, blob=prev.blob, target=prev.target,
                             mode=prev.mode, mtime_ns=prev.mtime_ns, expect=expect_to,
                             key=rec.key + "-w", blobs=blobs, then_delete=rec.id),
                     rec.dst)  # fmt: skip
                push(Planned("delete", rec.path, [rec.id], expect=prev.expect, key=rec.key,
                             rename_record=rec.id), rec.path)  # fmt: skip
                continue
            forget_under(rec.path)
            forget_under(rec.dst)
            push(
                Planned("rename", rec.path, [rec.id], dst=rec.dst, expect=rec.expect,
                        expect_to=rec.expect_to, key=rec.key),
                rec.path, rec.dst,
            )  # fmt: skip
        elif rec.op == "mkdir":
            push(Planned("mkdir", rec.path, [rec.id], key=rec.key), rec.path)
        else:  # pragma: no cover - the journal only holds these
            raise ValueError(f"unknown journal op {rec.op!r}")
    return Plan(_chain_preconditions([op for op in out if op is not None]), dropped)


def _chain_preconditions(ops: list[Planned]) -> list[Planned]:
    """Every journaled change of a path carries what the remote held there before any of
    ours. Only the first op of a path in a plan may check that; the later ones follow our
    own earlier op (in the same atomic batch, or a round the flusher ends before them),
    so they check nothing. A directory rename carries the paths below it along."""
    touched: set[str] = set()

    def mark(path: str) -> bool:
        seen = path in touched
        touched.add(path)
        return seen

    for op in ops:
        op.check = not mark(op.path)
        if op.op == "rename" and op.dst is not None:
            op.check_to = not mark(op.dst)
            prefix = op.path + "/"
            touched |= {op.dst + "/" + p[len(prefix) :] for p in touched if p.startswith(prefix)}
    return ops
