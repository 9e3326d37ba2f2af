"""An in-memory `Remote` with the native server's semantics, for in-process vfs tests.

Versions are real: a file's version is the SHA-256 of its content (as the native
adapter's `version_of`), a symlink's the SHA-256 of its target. Every applied commit
bumps the head (a counter, as a string). `apply` checks every change's `expect` and is
atomic: all changes applied, or none (Conflicted where a precondition failed, the
others Failed(Aborted)), with idempotency keys replayed like the server does (the
first answer again, marked `replayed`).

`put`, `remove` and `move` act as another client of the same repo; `files()` is what
the repo holds. `requests` counts calls per method, for request-count assertions.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO

import trio

from repomount.remotes.base import (
    Aborted,
    Applied,
    ApplyResult,
    Capabilities,
    Change,
    Conflict,
    Conflicted,
    Content,
    Delete,
    Entry,
    EntryKind,
    Expect,
    ExpectT,
    Failed,
    Fetched,
    Listing,
    Mkdir,
    NotFound,
    Outcome,
    ProtocolError,
    Remote,
    RemoteError,
    Rename,
    RepoInfo,
    Symlink,
    Unavailable,
    Write,
)
from support.util import sha

FILE_MODE = 0o644
DIR_MODE = 0o755


@dataclass(frozen=True)
class Item:
    kind: EntryKind
    data: bytes = b""  # a file's content, a symlink's target (UTF-8)
    mode: int = FILE_MODE
    mtime: float = 0.0
    mtime_ns: int | None = None  # exact, as a write set it (listed back as the server does)

    @property
    def version(self) -> str | None:
        return None if self.kind == "dir" else sha(self.data)


class _Refused(Exception):
    """A structural error of one change: the whole commit fails, blaming it."""

    def __init__(self, error: RemoteError) -> None:
        super().__init__(error.message)
        self.error = error


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class MemRemote(Remote):
    capabilities = Capabilities(
        conditional_write=True,
        atomic_batch=True,
        rename=True,
        delete=True,
        empty_dirs=True,
        ranged_read=True,
        change_feed=False,
        binary_content=True,
        recursive_listing=True,
        directory_listing=True,
        file_modes=True,
        file_mtimes=True,
        symlinks=True,
    )

    def __init__(
        self,
        name: str = "mem",
        *,
        recursive_listing: bool = True,
        staged_upload: bool = False,
        upload_ahead: bool = False,
        max_file_size: int | None = None,
    ) -> None:
        self.name = name
        self.max_file_size = max_file_size  # what info() says
        if not recursive_listing:
            self.capabilities = replace(self.capabilities, recursive_listing=False)
        if staged_upload:
            self.capabilities = replace(self.capabilities, staged_upload=True)
        if upload_ahead:
            self.capabilities = replace(self.capabilities, upload_ahead=True)
        self.staged: dict[str, bytes] = {}  # sha256 -> content by `stage`, `upload_ahead`
        self.items: dict[str, Item] = {}  # path -> item; the root "" is implicit
        self.head_no = 0
        self.requests: Counter[str] = Counter()
        self.commits: list[list[Change]] = []  # every applied batch, in order
        self._replies: dict[str, ApplyResult] = {}  # idempotency key -> first answer

    @property
    def identity(self) -> str:
        return f"mem:{self.name}"

    @property
    def head(self) -> str:
        return str(self.head_no)

    async def stage(self, body: Callable[[], AsyncIterator[bytes]]) -> str:
        self.requests["stage"] += 1
        data = b"".join([piece async for piece in body()])
        digest = sha(data)
        self.staged[digest] = data
        return digest

    async def upload_ahead(self, contents: Sequence[Content]) -> set[str]:
        self.requests["upload_ahead"] += 1
        await trio.lowlevel.checkpoint()
        for c in contents:
            data = c.source.read_bytes()
            if len(data) != c.size or sha(data) != c.sha256:
                raise ProtocolError(f"{c.source}: not the content {c.sha256}")
            self.staged[c.sha256] = data
        return {c.sha256 for c in contents}

    # ------------------------------------------------------------------ reading

    async def info(self) -> RepoInfo:
        self.requests["info"] += 1
        await trio.lowlevel.checkpoint()
        return RepoInfo(self.name, self.head, max_file_size=self.max_file_size)

    def listing(self, path: str, *, recursive: bool = False) -> Listing:
        """The listing as of now, synchronously (no request counted)."""
        if path and (path not in self.items or self.items[path].kind != "dir"):
            raise NotFound(f"{path!r} is not a directory", status=404)
        prefix = f"{path}/" if path else ""
        entries = [
            self._entry(p)
            for p in sorted(self.items)
            if p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])
        ]
        return Listing(path, self.head, entries, recursive)

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        self.requests["list_tree"] += 1
        await trio.lowlevel.checkpoint()
        return self.listing(path, recursive=recursive)

    async def stat(self, path: str) -> Entry | None:
        self.requests["stat"] += 1
        await trio.lowlevel.checkpoint()
        if path == "":
            return Entry("", "dir")
        return self._entry(path) if path in self.items else None

    async def read(
        self,
        path: str,
        dest: BinaryIO,
        *,
        version: str | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> Fetched:
        self.requests["read"] += 1
        await trio.lowlevel.checkpoint()
        item = self.items.get(path)
        if item is None or item.kind == "dir":
            raise NotFound(f"no file {path!r}", status=404)
        if version is not None and item.version != version:
            raise Conflict(f"{path!r} is not at {version}", current=item.version, status=412)
        end = len(item.data) if length is None else offset + length
        chunk = item.data[offset:end]
        dest.write(chunk)
        return Fetched(item.version, len(item.data), len(chunk))

    def _entry(self, path: str) -> Entry:
        item = self.items[path]
        size = 0 if item.kind == "dir" else len(item.data)
        target = item.data.decode() if item.kind == "symlink" else None
        return Entry(
            path, item.kind, size, item.version, item.mtime, item.mode, target, item.mtime_ns
        )

    # ------------------------------------------------------------------ writing

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        self.requests["apply"] += 1
        await trio.lowlevel.checkpoint()
        key = "\0".join(c.key for c in changes) if all(c.key for c in changes) else None
        if key is not None and key in self._replies:
            return replace(self._replies[key], replayed=True)
        result = self.apply_now(changes)
        if key is not None and all(isinstance(o, Applied) for o in result.outcomes):
            self._replies[key] = result
        return result

    def apply_now(self, changes: Sequence[Change]) -> ApplyResult:
        """Apply a batch atomically, synchronously (no request counted)."""
        if not changes:
            return ApplyResult(self.head, [])
        state = dict(self.items)
        conflicts: dict[int, str | None] = {}
        versions: list[str | None] = []
        for i, change in enumerate(changes):
            try:
                versions.append(self._one(state, change, i, conflicts))
            except _Refused as refused:
                if conflicts:
                    break
                aborted = Failed(Aborted("not applied: another change of the batch failed"))
                outcomes: list[Outcome] = [aborted] * len(changes)
                outcomes[i] = Failed(refused.error)
                return ApplyResult(self.head, outcomes)
        if conflicts:
            aborted = Failed(Aborted("not applied: a precondition of the batch failed"))
            outcomes = [
                Conflicted(conflicts[i]) if i in conflicts else aborted for i in range(len(changes))
            ]
            return ApplyResult(self.head, outcomes)
        self.items = state
        self.head_no += 1
        self.commits.append(list(changes))
        return ApplyResult(self.head, [Applied(v) for v in versions])

    def _one(
        self, state: dict[str, Item], c: Change, i: int, conflicts: dict[int, str | None]
    ) -> str | None:
        now = time.time()
        if isinstance(c, Write | Symlink):
            if isinstance(c, Write):
                if c.staged:  # (only a content staged before: never read from source)
                    if c.sha256 not in self.staged:  # (as the server's unknown blob)
                        why = f"{c.path}: no staged content {c.sha256}"
                        raise _Refused(Unavailable(why, code="unknown_blob"))
                    data = self.staged[c.sha256]
                else:
                    data = c.source.read_bytes()
                if sha(data) != c.sha256 or len(data) != c.size:
                    raise _Refused(ProtocolError(f"{c.path}: content does not match its digest"))
            else:
                data = c.target.encode()
            self._make_parents(state, c.path)
            cur = state.get(c.path)
            if cur is not None and cur.kind == "dir":
                raise _Refused(Conflict(f"{c.path} is a directory", code="path_conflict"))
            self._check(c.expect, cur, i, conflicts)
            if isinstance(c, Symlink):
                state[c.path] = Item("symlink", data, 0o777, now)
            else:
                mode = c.mode
                if mode is None:  # keep the replaced file's mode, as the server does
                    mode = cur.mode if cur is not None and cur.kind == "file" else FILE_MODE
                exact = time.time_ns() if c.mtime_ns is None else c.mtime_ns
                state[c.path] = Item("file", data, mode & 0o7777, exact / 1e9, exact)
            return state[c.path].version
        if isinstance(c, Delete):
            cur = state.get(c.path)
            if cur is None and c.expect is Expect.ANY:
                raise _Refused(NotFound(f"cannot delete {c.path}: it does not exist"))
            self._check(c.expect, cur, i, conflicts)
            if cur is None:
                return None
            if cur.kind == "dir" and any(p.startswith(c.path + "/") for p in state):
                raise _Refused(Conflict(f"{c.path} is not empty", code="directory_not_empty"))
            del state[c.path]
            return None
        if isinstance(c, Rename):
            return self._rename(state, c, i, conflicts)
        assert isinstance(c, Mkdir)
        self._make_parents(state, c.path)
        cur = state.get(c.path)
        if cur is not None and cur.kind != "dir":
            raise _Refused(Conflict(f"cannot mkdir {c.path}: a {cur.kind}", code="path_conflict"))
        state.setdefault(c.path, Item("dir", mode=DIR_MODE, mtime=now))
        return None

    def _rename(
        self, state: dict[str, Item], c: Rename, i: int, conflicts: dict[int, str | None]
    ) -> str | None:
        if c.dst.startswith(c.src + "/"):
            raise _Refused(ProtocolError(f"cannot move {c.src} into itself"))
        cur = state.get(c.src)
        if cur is None and c.expect is Expect.ANY:
            raise _Refused(NotFound(f"cannot rename {c.src}: it does not exist"))
        self._check(c.expect, cur, i, conflicts)
        if cur is None or c.src == c.dst:
            return None if cur is None else cur.version
        self._make_parents(state, c.dst)
        target = state.get(c.dst)
        self._check(c.expect_to, target, i, conflicts)
        if target is not None:
            if (target.kind == "dir") != (cur.kind == "dir"):
                raise _Refused(Conflict(f"cannot rename onto {c.dst}", code="path_conflict"))
            if target.kind == "dir" and any(p.startswith(c.dst + "/") for p in state):
                raise _Refused(Conflict(f"{c.dst} is not empty", code="directory_not_empty"))
        moved = {p: it for p, it in state.items() if p == c.src or p.startswith(c.src + "/")}
        for p in moved:
            del state[p]
        for p, it in moved.items():
            state[c.dst + p[len(c.src) :]] = it
        return cur.version

    @staticmethod
    def _check(expect: ExpectT, cur: Item | None, i: int, conflicts: dict[int, str | None]) -> None:
        if expect is Expect.ANY:
            return
        ok = cur is None if expect is Expect.ABSENT else cur is not None and cur.version == expect
        if not ok:
            conflicts.setdefault(i, None if cur is None else cur.version)

    @staticmethod
    def _make_parents(state: dict[str, Item], path: str) -> None:
        for parent in _parents(path):
            cur = state.get(parent)
            if cur is None:
                state[parent] = Item("dir", mode=DIR_MODE, mtime=time.time())
            elif cur.kind != "dir":
                raise _Refused(Conflict(f"{parent} is a {cur.kind}", code="path_conflict"))

    def version_of(self, sha256: str) -> str | None:
        return sha256

    # ------------------------------------------------------------------ another client

    def _commit_other(self, state: dict[str, Item]) -> None:
        self.items = state
        self.head_no += 1

    def put(self, path: str, data: bytes, *, mode: int = FILE_MODE) -> str:
        """Another client writes `path` (making its parents); returns the new version."""
        state = dict(self.items)
        self._make_parents(state, path)
        state[path] = Item("file", data, mode, time.time())
        self._commit_other(state)
        return sha(data)

    def mkdir(self, path: str) -> None:
        state = dict(self.items)
        self._make_parents(state, path)
        state.setdefault(path, Item("dir", mode=DIR_MODE, mtime=time.time()))
        self._commit_other(state)

    def remove(self, path: str) -> None:
        """Another client deletes `path` (a directory with everything below it)."""
        state = {
            p: it for p, it in self.items.items() if p != path and not p.startswith(path + "/")
        }
        if len(state) == len(self.items):
            raise KeyError(path)
        self._commit_other(state)

    def move(self, src: str, dst: str) -> None:
        """Another client renames `src` to `dst` (replacing a file there)."""
        state = dict(self.items)
        self._make_parents(state, dst)
        moved = {p: it for p, it in state.items() if p == src or p.startswith(src + "/")}
        if not moved:
            raise KeyError(src)
        for p in moved:
            del state[p]
        for p, it in moved.items():
            state[dst + p[len(src) :]] = replace(it, mtime=time.time())
        self._commit_other(state)

    def files(self) -> dict[str, bytes]:
        return {p: it.data for p, it in self.items.items() if it.kind == "file"}

    def dirs(self) -> set[str]:
        return {p for p, it in self.items.items() if it.kind == "dir"}
