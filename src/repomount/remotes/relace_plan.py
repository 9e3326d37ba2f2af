"""How a batch of changes becomes Relace requests: pure logic, no I/O.

Relace has no conditional write, so the adapter checks each change's precondition
itself against the remote's current content (`check`), simulating the batch in order so
that a later change may expect what an earlier one wrote. The changes that pass become
wire operations, and `group` packs them into requests: one `update` applies all deletes,
then all writes, then all renames whatever the order sent (reference §3.5), so an
operation joins a request only if, for every path it shares (or nests with) an earlier
operation of that request, its phase comes strictly later; otherwise a new request
starts. Sent in order, the requests then mean what the changes meant in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from repomount.remotes.base import (
    Applied,
    ApplyResult,
    Change,
    Conflicted,
    Delete,
    Entry,
    Expect,
    Failed,
    Mkdir,
    Outcome,
    Rename,
    Unsupported,
    Write,
    expect_met,
)
from repomount.remotes.filetree import FileTree

# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class RemoteFile:
    size: int
    version: str  # SHA-256 hex of the bytes


class Snapshot(FileTree):
    """A repo's files as one `clone` returned them, and the directories they imply."""

    def __init__(self, files: Mapping[str, RemoteFile], taken: float) -> None:
        self.files = dict(files)
        self.taken = taken  # trio clock
        super().__init__(self.files)

    def file_entry(self, path: str) -> Entry | None:
        file = self.files.get(path)
        return None if file is None else Entry(path, "file", size=file.size, version=file.version)

    def files_under(self, path: str) -> list[str]:
        prefix = path + "/"
        return sorted(p for p in self.files if p.startswith(prefix))


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class WireWrite:
    index: int  # of the change in the batch
    change: Write

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.change.path,)


@dataclass(frozen=True)
class WireDelete:
    index: int
    path: str

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,)


@dataclass(frozen=True)
class WireRename:
    index: int
    src: str  # a file: a directory rename is sent as one of these per file
    dst: str

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.src, self.dst)


WireOp = WireWrite | WireDelete | WireRename
PHASE: dict[type, int] = {WireDelete: 0, WireWrite: 1, WireRename: 2}


@dataclass
class Checked:
    """What to do with a batch: outcomes known without a request (None: to be sent),
    the wire operations in order, and the version each sent change will have."""

    outcomes: list[Outcome | None]
    ops: list[WireOp] = field(default_factory=list)
    versions: dict[int, str | None] = field(default_factory=dict)

    def result(self, head: str | None) -> ApplyResult:
        """The batch's result once its requests went out: a change still without an
        outcome (no request of it failed) was applied."""
        outcomes = [
            Applied(self.versions.get(i)) if outcome is None else outcome
            for i, outcome in enumerate(self.outcomes)
        ]
        return ApplyResult(head=head, outcomes=outcomes)


def paths_to_check(changes: Sequence[Change]) -> set[str]:
    """The paths whose current content the batch depends on: every precondition, and
    every delete or rename source (Relace fails a whole update on a missing one)."""
    paths: set[str] = set()
    for change in changes:
        if isinstance(change, Delete) or (
            isinstance(change, Write) and change.expect is not Expect.ANY
        ):
            paths.add(change.path)
        elif isinstance(change, Rename):
            paths.add(change.src)
            if change.expect_to is not Expect.ANY:
                paths.add(change.dst)
    return paths


def check(
    changes: Sequence[Change], current: Mapping[str, str | None], tree: Snapshot | None
) -> Checked:
    """Simulate the batch over `current` (path -> version of the file there, None: no
    file) and decide each change. `tree` (a fresh clone) must be given when a rename's
    source is no file: it may be a directory, to be renamed file by file."""
    state: dict[str, str | None] = dict(current)
    result = Checked(outcomes=[None] * len(changes))
    for i, change in enumerate(changes):
        if isinstance(change, Mkdir):
            result.outcomes[i] = Applied(None)  # directories exist only through files
        elif isinstance(change, Write):
            now = state.get(change.path)
            if change.path in state and not expect_met(change.expect, now):
                result.outcomes[i] = Conflicted(now)
                continue
            result.ops.append(WireWrite(i, change))
            result.versions[i] = state[change.path] = change.sha256
        elif isinstance(change, Delete):
            now = state.get(change.path)
            if now is None:  # already gone (or an empty directory, unknown to Relace)
                absent_ok = not isinstance(change.expect, str)
                result.outcomes[i] = Applied(None) if absent_ok else Conflicted(None)
            elif not expect_met(change.expect, now):
                result.outcomes[i] = Conflicted(now)
            else:
                result.ops.append(WireDelete(i, change.path))
                result.versions[i] = state[change.path] = None
        elif isinstance(change, Rename):
            _check_rename(i, change, state, tree, result)
        else:  # the vfs sends no symlinks where capabilities.symlinks is False
            result.outcomes[i] = Failed(Unsupported("Relace stores no symbolic links"))
    return result


def _check_rename(
    i: int,
    change: Rename,
    state: dict[str, str | None],
    tree: Snapshot | None,
    result: Checked,
) -> None:
    src, dst = change.src, change.dst
    now = state.get(src)
    if now is None:
        files = _files_under(src, state, tree)
        if not files:  # nothing there, or an empty directory that only exists locally
            absent_ok = not isinstance(change.expect, str)
            result.outcomes[i] = Applied(None) if absent_ok else Conflicted(None)
            return
        if change.expect_to is Expect.ABSENT and (
            state.get(dst) is not None or _files_under(dst, state, tree)
        ):
            result.outcomes[i] = Conflicted(state.get(dst))
            return
        for path in files:
            target = dst + path[len(src) :]
            result.ops.append(WireRename(i, path, target))
            state[target], state[path] = state.get(path), None
        result.versions[i] = None
        return
    if not expect_met(change.expect, now):
        result.outcomes[i] = Conflicted(now)
        return
    if dst in state and not expect_met(change.expect_to, state[dst]):
        result.outcomes[i] = Conflicted(state[dst])
        return
    if src != dst:
        result.ops.append(WireRename(i, src, dst))
        state[dst], state[src] = now, None
    result.versions[i] = now


def _files_under(path: str, state: Mapping[str, str | None], tree: Snapshot | None) -> list[str]:
    """Files below `path` now: the clone's, corrected by what the batch did so far."""
    prefix = path + "/"
    found = set(tree.files_under(path)) if tree is not None else set()
    for p, version in state.items():
        if p.startswith(prefix):
            if version is None:
                found.discard(p)
            else:
                found.add(p)
    return sorted(found)


# --------------------------------------------------------------------------- grouping


def group(
    ops: Iterable[WireOp],
    *,
    inline: Callable[[WireWrite], int | None],
    max_ops: int,
    budget: int,
) -> list[list[WireOp]]:
    """Pack wire operations, in order, into requests. `inline(w)` is the size a write
    adds to an update body, or None when it must go alone as `PUT /file` (binary, or
    too big for JSON); each request carries at most `max_ops` and `budget` bytes."""
    requests: list[list[WireOp]] = []
    current: list[WireOp] = []
    size = 0
    for op in ops:
        cost = inline(op) if isinstance(op, WireWrite) else 0
        if cost is None:
            if current:
                requests.append(current)
            requests.append([op])
            current, size = [], 0
            continue
        if current and (
            len(current) >= max_ops or size + cost > budget or not _may_join(current, op)
        ):
            requests.append(current)
            current, size = [], 0
        current.append(op)
        size += cost
    if current:
        requests.append(current)
    return requests


def _may_join(request: Sequence[WireOp], op: WireOp) -> bool:
    phase = PHASE[type(op)]
    for earlier in request:
        if PHASE[type(earlier)] >= phase and any(
            _related(a, b) for a in op.paths for b in earlier.paths
        ):
            return False
    return True


def _related(a: str, b: str) -> bool:
    """The same path, or one inside the other (a file and its would-be directory)."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")
