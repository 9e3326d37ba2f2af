"""One Oxen commit of staged changes onto a branch (blocking: run in a thread).

Shared by workspaces and the one-call `PUT`/`DELETE /file`: staged additions (path ->
blob) and removals (files or directories) become one store commit on the branch's head.
A workspace made at an older commit is *behind*: if any staged path changed on the
branch since then, the commit is refused with 409, never merged silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from repomount.paths import ancestors_of, parent_of
from repomount.server.faces.oxen_model import (
    DEFAULT_BRANCH,
    OxenError,
    author_field,
    bad_request,
)
from repomount.server.faces.oxen_repos import Ref, Repos
from repomount.server.store import Delete as StoreDelete
from repomount.server.store import (
    DirectoryNotEmpty,
    Entry,
    Operation,
    PathConflict,
    StaleBase,
    UnknownBlob,
)
from repomount.server.store import Write as StoreWrite

RACE_RETRIES = 5


@dataclass
class Staged:
    adds: dict[str, str] = field(default_factory=dict)  # path -> blob (SHA-256)
    removes: set[str] = field(default_factory=set)

    @property
    def paths(self) -> set[str]:
        return set(self.adds) | self.removes

    def __bool__(self) -> bool:
        return bool(self.adds or self.removes)


def commit_staged(
    repos: Repos,
    repo: str,
    branch: str,
    staged: Staged,
    *,
    base: Ref | None,
    message: str,
    name: str,
    email: str,
) -> Ref:
    """Commit `staged` onto `branch` (made from main's empty first commit in an empty
    repository); `base` is the commit the changes were staged against."""
    if not staged:
        raise OxenError(422, "no_changes", "No changes to commit")
    for _ in range(RACE_RETRIES):
        if branch == DEFAULT_BRANCH and repos.is_empty(repo):
            repos.make_root(repo)
        head = repos.branch(repo, branch)
        if base is not None and base != head:
            behind = changed_since(repos, base, head, staged.paths)
            if behind:
                raise OxenError(
                    409,
                    "conflict",
                    "Workspace is behind",
                    f"changed on {branch!r} since the workspace's commit: {', '.join(behind[:5])}",
                )
        ops = plan(repos, head, staged)
        if not ops:
            raise OxenError(422, "no_changes", "No changes to commit")
        try:
            result = repos.store.commit(
                head.store,
                ops,
                message=message,
                author=author_field(name, email),
                base=head.seq,
            )
        except StaleBase:
            continue  # someone else committed meanwhile: decide again on the new head
        except (PathConflict, DirectoryNotEmpty) as e:
            raise bad_request("Cannot commit these changes", e.message) from None
        except UnknownBlob as e:
            raise OxenError(422, "bad_request", "Staged content is gone", e.message) from None
        return Ref(head.store, result.head)
    raise OxenError(429, "locked", "The branch is busy with other commits; retry")


def changed_since(repos: Repos, base: Ref, head: Ref, paths: Iterable[str]) -> list[str]:
    """The paths (or anything below them) that differ between `base` and `head`."""
    paths = sorted(paths)
    _, before = repos.store.stat_many(base.store, paths, at=base.seq)
    _, after = repos.store.stat_many(head.store, paths, at=head.seq)
    changed = []
    for path, old, new in zip(paths, before, after, strict=True):
        if _key(old) != _key(new):
            changed.append(path)
        elif old is not None and old.type == "dir":
            old_tree = {p: _key(e) for p, e in repos.tree(base, path).items()}
            new_tree = {p: _key(e) for p, e in repos.tree(head, path).items()}
            if old_tree != new_tree:
                changed.append(path)
    return changed


def _key(e: Entry | None) -> tuple[str, str | None] | None:
    return None if e is None else (e.type, e.version)


def plan(repos: Repos, head: Ref, staged: Staged) -> list[Operation]:
    """The store operations that apply `staged` to the tree at `head`: removals (a
    directory with everything below it), then additions that change something, then
    the removal of directories left with nothing in them (Oxen keeps none). A path
    both removed and added is replaced: a directory there goes first."""
    ops: list[Operation] = []
    removed: set[str] = set()
    tree: dict[str, Entry] | None = None
    for path in sorted(staged.removes):
        entry = repos.entry(head, path)
        if entry is None or (path in staged.adds and entry.type == "file"):
            continue  # gone already, or a file the addition replaces
        if entry.type == "dir":
            below = sorted(repos.tree(head, path), reverse=True)
            removed.update(below)
        removed.add(path)
    for path in sorted(removed, reverse=True):
        ops.append(StoreDelete(path))
    current = dict(
        zip(
            staged.adds,
            repos.store.stat_many(head.store, list(staged.adds), at=head.seq)[1],
            strict=True,
        )
    )
    for path, blob in sorted(staged.adds.items()):
        now = current[path]
        if now is not None and now.type == "file" and now.version == blob:
            continue
        if now is not None and now.type == "symlink":
            ops.append(StoreDelete(path))
        ops.append(StoreWrite(path, blob))
    if removed:
        tree = repos.tree(head)
        ops += _emptied_dirs(tree, removed, set(staged.adds))
    return ops


def _emptied_dirs(tree: dict[str, Entry], removed: set[str], added: set[str]) -> list[Operation]:
    """Deletes of the directories above removed paths that nothing is left in."""
    left: dict[str, int] = {}
    for path in tree:
        if path not in removed:
            left[parent_of(path)] = left.get(parent_of(path), 0) + 1
    for path in added:
        for d in ancestors_of(path):
            left[d] = left.get(d, 0) + 1
    candidates = sorted(
        {d for p in removed for d in ancestors_of(p) if d not in removed}, reverse=True
    )
    ops: list[Operation] = []
    for d in candidates:
        if left.get(d, 0) == 0 and d in tree and tree[d].type == "dir":
            ops.append(StoreDelete(d))
            parent = parent_of(d)
            left[parent] = left.get(parent, 0) - 1
    return ops
