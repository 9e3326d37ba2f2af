"""How a batch of changes becomes one Oxen workspace commit: pure logic, no I/O.

The adapter opens a workspace (its commit is the branch head it will be checked
against), reads the tree there, and `check` simulates the batch in order over it:
each precondition is compared with the file's hash (a later change may expect what an
earlier one wrote), a write below a file or onto a directory is refused, and the
changes that pass become staged additions and removals. A workspace commit is all or
nothing, so one conflicted or refused change aborts the others (atomic_batch): nothing
is sent, and they go again in the next round.

Renames stage the removal of the source and the addition of its content (downloaded
from the workspace's commit) at the destination; a directory is renamed file by file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from repomount.paths import ancestors_of
from repomount.remotes.base import (
    Aborted,
    Applied,
    ApplyResult,
    Change,
    Conflict,
    Conflicted,
    Delete,
    Expect,
    Failed,
    InvalidPath,
    Mkdir,
    Outcome,
    Rename,
    Unsupported,
    Write,
    expect_met,
)

DIR = "/"  # the "version" of a directory in a Tree


@dataclass(frozen=True)
class Copy:
    """Content to stage at a new path: the file `src` as the workspace's commit has it."""

    src: str
    version: str


@dataclass
class Plan:
    outcomes: list[Outcome | None]
    adds: dict[str, Write | Copy] = field(default_factory=dict)  # path -> content
    removes: set[str] = field(default_factory=set)
    versions: dict[int, str | None] = field(default_factory=dict)  # change -> new version

    @property
    def aborted(self) -> bool:
        return any(isinstance(o, Conflicted | Failed) for o in self.outcomes)

    @property
    def empty(self) -> bool:
        return not self.adds and not self.removes

    def result(self, head: str | None) -> ApplyResult:
        """Every change without an outcome was applied (the commit landed), or, when one
        of them was conflicted or refused, aborted (nothing was sent)."""
        outcomes: list[Outcome]
        if self.aborted:
            why = Failed(Aborted("not sent: another change of its batch was refused"))
            outcomes = [why if o is None or isinstance(o, Applied) else o for o in self.outcomes]
        else:
            outcomes = [
                Applied(self.versions.get(i)) if o is None else o
                for i, o in enumerate(self.outcomes)
            ]
        return ApplyResult(head=head, outcomes=outcomes)


def paths_needed(changes: Sequence[Change]) -> tuple[set[str], set[str]]:
    """(paths whose entry the batch depends on, with their ancestors; directories whose
    whole subtree it may need: delete and rename sources)."""
    paths: set[str] = set()
    subtrees: set[str] = set()
    for change in changes:
        if isinstance(change, Rename):
            touched = [change.src, change.dst]
            subtrees.update((change.src, change.dst))
        elif isinstance(change, Delete):
            touched = [change.path]
            subtrees.add(change.path)
        elif isinstance(change, Write):
            touched = [change.path]
        else:
            continue
        for path in touched:
            paths.add(path)
            paths.update(ancestors_of(path))
    return paths, subtrees


def check(changes: Sequence[Change], tree: Mapping[str, str], hashes: Mapping[int, str]) -> Plan:
    """Simulate the batch over `tree` (path -> a file's hash, or DIR; what is missing is
    absent); `hashes` holds the xxh3 of each Write's content, by index."""
    state = dict(tree)
    plan = Plan(outcomes=[None] * len(changes))
    for i, change in enumerate(changes):
        if isinstance(change, Mkdir):
            plan.outcomes[i] = Applied(None)  # directories exist only through files
        elif isinstance(change, Write):
            _write(i, change, hashes[i], state, plan)
        elif isinstance(change, Delete):
            _delete(i, change, state, plan)
        elif isinstance(change, Rename):
            _rename(i, change, state, plan)
        else:
            plan.outcomes[i] = Failed(Unsupported("Oxen stores no symbolic links"))
    plan.removes = _removals(tree, state)
    return plan


def _file(state: Mapping[str, str], path: str) -> str | None:
    version = state.get(path)
    return None if version is None or version == DIR else version


def _blocked(state: Mapping[str, str], path: str) -> str | None:
    """Why a file cannot be written at `path`, or None."""
    if state.get(path) == DIR:
        return f"{path!r} is a directory"
    for parent in ancestors_of(path):
        if parent in state and state[parent] != DIR:
            return f"{parent!r} is a file, so {path!r} cannot be below it"
    return None


def _write(i: int, change: Write, version: str, state: dict[str, str], plan: Plan) -> None:
    now = _file(state, change.path)
    if state.get(change.path) != DIR and not expect_met(change.expect, now):
        plan.outcomes[i] = Conflicted(now)
        return
    blocked = _blocked(state, change.path)
    if blocked is not None:
        plan.outcomes[i] = Failed(InvalidPath(f"cannot write: {blocked}"))
        return
    _add(state, plan, change.path, change, version)
    plan.versions[i] = version


def _add(state: dict[str, str], plan: Plan, path: str, content: Write | Copy, version: str) -> None:
    for parent in ancestors_of(path):
        state[parent] = DIR
    state[path] = version
    plan.adds[path] = content
    plan.removes.discard(path)


def _remove(state: dict[str, str], plan: Plan, path: str) -> None:
    prefix = path + "/"
    for p in [p for p in state if p == path or p.startswith(prefix)]:
        del state[p]
        plan.adds.pop(p, None)


def _has_files_below(state: Mapping[str, str], path: str) -> bool:
    below = path + "/"
    return any(p.startswith(below) and v != DIR for p, v in state.items())


def _removals(base: Mapping[str, str], state: Mapping[str, str]) -> set[str]:
    """What to stage for removal so that `base` becomes `state` (with the additions):
    every path gone or changed in kind, except below another such directory."""
    gone = {p for p, v in base.items() if p not in state or (v == DIR) != (state[p] == DIR)}
    return {p for p in gone if not any(a in gone and base.get(a) == DIR for a in ancestors_of(p))}


def _delete(i: int, change: Delete, state: dict[str, str], plan: Plan) -> None:
    now = state.get(change.path)
    if now is None:
        # Gone already (or an empty directory only the mount knew).
        plan.outcomes[i] = Applied(None) if not isinstance(change.expect, str) else Conflicted(None)
        return
    if now != DIR and not expect_met(change.expect, now):
        plan.outcomes[i] = Conflicted(now)
        return
    if now == DIR and _has_files_below(state, change.path):
        # Oxen removes a directory with everything in it: files someone else added, or
        # that no mount can show (DirPage.hidden), would go too. Refused as repomount's
        # server refuses the delete of a directory that is not empty.
        why = f"cannot delete directory {change.path!r}: the remote has files in it"
        plan.outcomes[i] = Failed(Conflict(why, code="directory_not_empty"))
        return
    _remove(state, plan, change.path)
    plan.versions[i] = None


def _rename(i: int, change: Rename, state: dict[str, str], plan: Plan) -> None:
    src, dst = change.src, change.dst
    now = state.get(src)
    if now is None:
        plan.outcomes[i] = Applied(None) if not isinstance(change.expect, str) else Conflicted(None)
        return
    if now != DIR and not expect_met(change.expect, now):
        plan.outcomes[i] = Conflicted(now)
        return
    there = state.get(dst)
    if there == DIR and not _has_files_below(state, dst):
        there = None  # (its files went earlier in the batch: Oxen keeps no empty one)
    if there == DIR and src != dst:  # (Oxen has no empty directories to replace)
        if change.expect_to is Expect.ABSENT:
            # Made elsewhere since the mount saw the name free: a conflict, as on
            # repomount's server (a refusal held the rename, and what it carried).
            plan.outcomes[i] = Conflicted(None)
            return
        plan.outcomes[i] = Failed(InvalidPath(f"cannot rename onto the directory {dst!r}"))
        return
    if there != DIR and not expect_met(change.expect_to, there):
        plan.outcomes[i] = Conflicted(there)
        return
    if src == dst:
        plan.versions[i] = None if now == DIR else now
        return
    moved = {p: v for p, v in state.items() if p == src or p.startswith(src + "/")}
    contents = {p: plan.adds.get(p) for p in moved}
    _remove(state, plan, src)
    if dst in state:
        _remove(state, plan, dst)
    for p, version in sorted(moved.items()):
        if version == DIR:
            continue
        target = dst + p[len(src) :]
        blocked = _blocked(state, target)
        if blocked is not None:
            plan.outcomes[i] = Failed(InvalidPath(f"cannot rename: {blocked}"))
            return
        content = contents[p]
        _add(state, plan, target, content if content is not None else Copy(p, version), version)
    plan.versions[i] = None if now == DIR else now
