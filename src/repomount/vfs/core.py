"""The vfs facade: every filesystem operation the fuse layer calls, in terms of nodes.

No pyfuse3 and no httpx here: remote access goes through `remotes.base.Remote`, kernel
cache invalidation through the `Invalidator` the fuse layer hands in, errors leave as
`FsError` or `RemoteError` and are mapped to errno in `fuse/errors.py`.

Writes never wait for the network: close() freezes the file's spool into the journal,
namespace changes are journaled as they happen, and the flusher sends them in batches.
The local tree is the truth for anything the journal still holds; listings from the
remote refresh only what has no pending change.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cachetools
import trio

from repomount import paths
from repomount.remotes.base import Entry, Expect, NotFound, Remote, RemoteError
from repomount.vfs.coalesce import Planned
from repomount.vfs.conflicts import Policy
from repomount.vfs.content import ContentCache
from repomount.vfs.errors import FsError, exists, not_found
from repomount.vfs.flusher import FlushConfig, Flusher
from repomount.vfs.health import Health
from repomount.vfs.journal import Journal
from repomount.vfs.nodes import InodeTable, Node, child_path
from repomount.vfs.writes import Spool, WriteState

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

# Names that stay on local disk: vim swap and test files, backups, emacs and
# LibreOffice lock files.
DEFAULT_LOCAL_ONLY = (".*.sw?", "*~", ".#*", "#*#", "4913", ".~lock.*#")


class Invalidator(Protocol):
    """Tells the kernel to drop cached entries; must return at once (it only queues)."""

    def entry(self, parent_ino: int, name: str, deleted_ino: int = 0) -> None: ...

    def inode(self, ino: int, attr_only: bool = False) -> None: ...


class _NoInvalidation:
    def entry(self, parent_ino: int, name: str, deleted_ino: int = 0) -> None:
        pass

    def inode(self, ino: int, attr_only: bool = False) -> None:
        pass


@dataclass
class VfsConfig:
    cache_dir: Path  # this mount's own cache directory
    state_dir: Path  # this mount's own state directory (journal, spools, conflict copies)
    metadata_ttl: float = 5.0
    cache_size: int = 10 << 30  # bytes of fetched content kept on disk
    flush_delay: float = 0.5
    max_flush_window: float = 5.0
    transfers: int = 4
    on_conflict: Policy = Policy.KEEP_BOTH
    fsync_timeout: float = 60.0
    local_only: tuple[str, ...] = DEFAULT_LOCAL_ONLY
    uid: int = field(default_factory=os.getuid)
    gid: int = field(default_factory=os.getgid)


@dataclass
class Handle:
    fh: int
    node: Node
    writable: bool
    read_fd: int | None = None  # the cached content this handle reads, pinned at open


@dataclass
class DirHandle:
    node: Node
    names: list[str]  # a snapshot: offsets index into it, so they stay stable


class Vfs:
    def __init__(
        self, remote: Remote, config: VfsConfig, invalidator: Invalidator | None = None
    ) -> None:
        self.remote = remote
        self.config = config
        self.invalidator: Invalidator = invalidator or _NoInvalidation()
        self.inodes = InodeTable()
        self.cache = ContentCache(config.cache_dir, limit=config.cache_size)
        self.journal = Journal(config.state_dir)
        self.writes = WriteState(config.state_dir / "spool")
        self.health = Health()
        self.flusher = Flusher(
            remote,
            self.journal,
            self,
            FlushConfig(
                flush_delay=config.flush_delay,
                max_window=config.max_flush_window,
                transfers=config.transfers,
                policy=config.on_conflict,
                conflicts_dir=config.state_dir / "conflicts",
            ),
            self.health,
        )
        self.head: str | None = None
        # ino of each directory whose listing is fresh; expiry = --metadata-ttl
        self._fresh: cachetools.TTLCache[int, bool] = cachetools.TTLCache(
            maxsize=1 << 20, ttl=config.metadata_ttl, timer=time.monotonic
        )
        self._dir_locks: dict[int, trio.Lock] = {}
        self._node_locks: dict[int, trio.Lock] = {}
        self._ns_lock = trio.Lock()  # serialises namespace changes and listing merges
        self._handles: dict[int, Handle] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._next_fh = 1

    # ------------------------------------------------------------------ lifecycle

    async def start(self, replay_timeout: float = 120.0) -> list[int]:
        """Check the remote, then send what an earlier run left in the journal, before
        anything is served (so the tree we show is the remote's). Returns the ids still
        pending after that."""
        info = await self.remote.info()
        self.head = info.head
        self.flusher.head = info.head
        if not len(self.journal):
            return []
        log.info("replaying %d journaled change(s) from an earlier run", len(self.journal))
        left = await self.flusher.drain_with_own_loop(replay_timeout)
        if left:
            log.warning("%d change(s) could not be replayed and stay in the journal", len(left))
        return left

    async def close(self) -> None:
        for h in list(self._handles.values()):
            _close_fd(h)
        self.writes.close_all()
        self.journal.close()

    # ------------------------------------------------------------------ helpers

    def _node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise not_found(f"inode {ino}")
        return node

    def _lock_for(self, table: dict[int, trio.Lock], ino: int) -> trio.Lock:
        lock = table.get(ino)
        if lock is None:
            lock = table[ino] = trio.Lock()
        return lock

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def node_at(self, path: str) -> Node | None:
        """The node at `path` in the part of the tree already loaded (no requests)."""
        node = self.inodes.root
        for name in path.split("/") if path else ():
            if node.children is None or name not in node.children:
                return None
            node = node.children[name]
        return node

    def _journal_add(self, op: str, path: str, **kw: object) -> None:
        self.journal.add(op, path, **kw)  # type: ignore[arg-type]
        self.flusher.notify()

    # ------------------------------------------------------------------ listing

    def _authoritative(self, d: Node) -> bool:
        """Whether the local children of `d` are all there is to know right now: a
        directory made here, or one whose (re)naming the remote has not seen yet."""
        if not d.on_remote:
            return True
        node: Node | None = d
        while node is not None and node.parent is not None:
            if self.journal.touches(node.path):
                return True
            node = node.parent
        return False

    async def _listed(self, d: Node) -> dict[str, Node]:
        """The children of directory `d`, from a listing no older than the metadata TTL
        (or older, while the remote is unreachable)."""
        if not d.is_dir:
            raise FsError(errno.ENOTDIR)
        if d.children is not None and (
            d.ino in self._fresh or not self.health.online or self._authoritative(d)
        ):
            return d.children
        async with self._lock_for(self._dir_locks, d.ino):
            if d.children is not None and d.ino in self._fresh:
                return d.children
            await self._refresh(d)
        assert d.children is not None
        return d.children

    async def _refresh(self, d: Node) -> None:
        try:
            listing = await self.remote.list_tree(d.path)
        except NotFound:
            if d.children is not None:
                return
            raise not_found(d.path) from None
        except RemoteError as e:
            self.health.failed(e)
            if d.children is not None:
                return  # offline: serve what we know
            raise
        self.health.ok()
        self.head = listing.head or self.head
        async with self._ns_lock:
            if d.attached:
                self._merge_listing(d, listing.entries)
        self._fresh[d.ino] = True

    async def refresh_dirs(self, dir_paths: Sequence[str]) -> None:
        """Re-list these directories now, where loaded (remote changes seen by the
        watcher)."""
        for p in dir_paths:
            d = self.node_at(p)
            if d is not None and d.is_dir and d.children is not None:
                self._fresh.pop(d.ino, None)
                async with self._lock_for(self._dir_locks, d.ino):
                    await self._refresh(d)

    def loaded_dirs(self) -> list[str]:
        out = []
        stack = [self.inodes.root]
        while stack:
            d = stack.pop()
            if d.children is not None:
                out.append(d.path)
                stack.extend(c for c in d.children.values() if c.is_dir)
        return out

    def _merge_listing(self, d: Node, entries: Sequence[Entry]) -> None:
        first_time = d.children is None
        if d.children is None:
            d.children = {}
        seen: set[str] = set()
        for e in entries:
            name = e.name
            try:
                paths.validate_path(e.path)
            except paths.InvalidPathError as err:
                log.warning("skipping remote entry %r: %s", e.path, err)
                continue
            if child_path(d, name) != e.path:
                log.warning("skipping remote entry %r: not in directory %r", e.path, d.path)
                continue
            seen.add(name)
            if self.journal.touches(e.path):
                continue  # our own pending change decides what is there
            node = d.children.get(name)
            if node is not None and self._busy(node):
                continue
            if node is not None and node.kind != e.kind:
                self.inodes.detach(node)
                self.invalidator.entry(d.ino, name, node.ino)
                node = None
            if node is None:
                self.inodes.new_node(
                    d,
                    name,
                    e.kind,
                    size=e.size,
                    version=e.version,
                    fetch_path=e.path,
                    base=e.version if e.version is not None else Expect.ANY,
                    on_remote=True,
                    mtime=e.mtime if e.mtime is not None else time.time(),
                    mode=e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644),
                    target=e.target,
                )
                continue
            changed = node.version != e.version or node.size != e.size
            node.on_remote = True
            node.version = e.version
            node.target = e.target
            node.fetch_path = e.path
            node.base = e.version if e.version is not None else Expect.ANY
            node.size = e.size
            if e.mtime is not None:
                node.mtime = e.mtime
            if e.mode is not None:
                node.mode = e.mode
            if changed and not first_time:
                self.invalidator.inode(node.ino, attr_only=node.open_count > 0)
        for name, node in list(d.children.items()):
            if name in seen or self._busy(node):
                continue
            if self.journal.touches(node.path):
                continue
            self.inodes.detach(node)  # gone on the remote
            self.invalidator.entry(d.ino, name, node.ino)

    def _busy(self, node: Node) -> bool:
        """Local state the remote has not seen must not be replaced by a listing."""
        return (
            self.writes.dirty(node.ino)
            or self.writes.pending_blob(node.ino) is not None
            or node.local
            or _local_only(node)
        )

    def _on_remote(self, node: Node) -> bool:
        """Whether the remote has the name (for a directory: anything below it)."""
        if not node.is_dir:
            return node.base != Expect.ABSENT
        if node.on_remote:
            return True
        stack = [node]  # a directory made here holds files the remote may have
        while stack:
            n = stack.pop()
            for c in (n.children or {}).values():
                if c.is_dir:
                    stack.append(c)
                elif not c.local and (c.base != Expect.ABSENT or self.journal.touches(c.path)):
                    return True
        return False

    def _require(self, capability: str, path: str) -> None:
        """Refuse, clearly, what the remote cannot do (rather than queue a change that
        can never be sent)."""
        if not getattr(self.remote.capabilities, capability):
            log.warning("%s %s: not supported by %s", capability, path, self.remote.identity)
            raise FsError(errno.EPERM, f"{capability} is not supported by this remote")

    def _is_local_name(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.config.local_only)

    async def _child(self, parent: Node, name: str) -> Node:
        children = await self._listed(parent)
        node = children.get(name)
        if node is None:
            raise not_found(child_path(parent, name))
        return node

    # ------------------------------------------------------------------ metadata ops

    async def lookup(self, parent_ino: int, name: str) -> Node:
        if name in (".", ".."):
            raise FsError(errno.ENOENT)  # the kernel resolves these itself
        node = await self._child(self._node(parent_ino), name)
        node.lookups += 1
        return node

    def note_lookup(self, node: Node) -> None:
        """The kernel got a reference to `node` some other way (readdirplus)."""
        node.lookups += 1

    def forget(self, items: Sequence[tuple[int, int]]) -> None:
        for ino, count in items:
            self.inodes.forget(ino, count)
            if self.inodes.get(ino) is None:  # gone for good: so is its per-inode state
                self._node_locks.pop(ino, None)
                self._dir_locks.pop(ino, None)
                self.writes.set_kernel_version(ino, None)

    def getattr(self, ino: int) -> Node:
        return self._node(ino)

    async def setattr(
        self,
        ino: int,
        fh: int | None,
        *,
        size: int | None = None,
        mode: int | None = None,
        mtime: float | None = None,
    ) -> Node:
        node = self._node(ino)
        if mode is not None and node.mode != mode & 0o7777:
            node.mode = mode & 0o7777
            if node.kind == "file" and self.remote.capabilities.file_modes and size is None:
                await self._journal_mode(node)
        if mtime is not None:
            node.mtime = mtime
        if size is not None:
            if node.is_dir:
                raise FsError(errno.EISDIR)
            async with self._lock_for(self._node_locks, ino):
                spool = await self._writable_spool(node)
                await trio.to_thread.run_sync(os.ftruncate, spool.fd, size)
                node.size = size
                node.mtime = time.time() if mtime is None else mtime
                spool.dirty = True
                if node.open_count == 0:  # truncate(2): no close() will follow
                    self._commit_content(node)
                    self.writes.close(node.ino)
        return node

    async def _journal_mode(self, node: Node) -> None:
        """chmod: the remote keeps modes only with content, so the mode rides on the
        pending write of the file, or on a new write of the same content."""
        if node.local or not node.attached or self.writes.dirty(node.ino):
            return  # local only, or its close will carry the mode
        pending = self.journal.latest(node.path, "write")
        if pending is not None:
            self.journal.update(pending, mode=node.mode)
            return
        if _local_only(node):
            return
        async with self._lock_for(self._node_locks, node.ino):
            blob = self.journal.new_blob_name()
            source = await self._content(node)
            await trio.to_thread.run_sync(shutil.copyfile, source, self.journal.blob_path(blob))
            self._journal_add("write", node.path, blob=blob, mode=node.mode, expect=node.base)
            self.writes.set_pending_blob(node.ino, blob)

    def statfs(self) -> dict[str, int]:
        blocks = 1 << 30
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": blocks,
            "f_bfree": blocks,
            "f_bavail": blocks,
            "f_files": 1 << 24,
            "f_ffree": (1 << 24) - len(self.inodes),
            "f_favail": (1 << 24) - len(self.inodes),
            "f_namemax": paths.MAX_NAME_BYTES,
        }

    # ------------------------------------------------------------------ directories

    async def opendir(self, ino: int) -> int:
        node = self._node(ino)
        children = await self._listed(node)
        fh = self._new_fh()
        self._dirs[fh] = DirHandle(node, sorted(children))
        return fh

    def readdir(self, fh: int, start: int) -> Iterator[tuple[int, str, Node, bool]]:
        """(next_id, name, node, counts_as_lookup) from offset `start`: "." and "..",
        then the snapshot taken at opendir. Names removed since are skipped, so offsets
        never skip or repeat a living entry."""
        dh = self._dirs[fh]
        dots = [(".", dh.node), ("..", dh.node.parent or dh.node)]
        for i in range(start, 2):
            yield i + 1, dots[i][0], dots[i][1], False
        children = dh.node.children or {}
        for i in range(max(start - 2, 0), len(dh.names)):
            node = children.get(dh.names[i])
            if node is not None:
                yield i + 3, dh.names[i], node, True

    def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    async def _existing_child(self, parent: Node, name: str) -> Node:
        """`parent`'s child `name` (ENOENT if none), for callers holding the ns lock."""
        node = (await self._listed_locked(parent)).get(name)
        if node is None:
            raise not_found(child_path(parent, name))
        return node

    async def _listed_locked(self, d: Node) -> dict[str, Node]:
        """`_listed` for callers holding the namespace lock (the merge needs it too)."""
        if d.children is not None and (
            d.ino in self._fresh or not self.health.online or self._authoritative(d)
        ):
            return d.children
        self._ns_lock.release()
        try:
            return await self._listed(d)
        finally:
            await self._ns_lock.acquire()

    def _valid_child_path(self, parent: Node, name: str) -> str:
        try:
            return paths.validate_path(child_path(parent, name))
        except paths.InvalidPathError as e:
            code = errno.ENAMETOOLONG if "limit" in e.reason else errno.EINVAL
            raise FsError(code, str(e)) from e

    async def mkdir(self, parent_ino: int, name: str, mode: int) -> Node:
        parent = self._node(parent_ino)
        path = self._valid_child_path(parent, name)
        async with self._ns_lock:
            children = await self._listed_locked(parent)
            if name in children:
                raise exists(path)
            node = self.inodes.new_node(parent, name, "dir", mode=mode & 0o7777)
            if self.remote.capabilities.empty_dirs:
                self._journal_add("mkdir", path)
                node.on_remote = True  # the journal now speaks for it
            node.lookups += 1
            self._fresh[node.ino] = True
            return node

    async def symlink(self, parent_ino: int, name: str, target: str) -> Node:
        parent = self._node(parent_ino)
        path = self._valid_child_path(parent, name)
        async with self._ns_lock:
            children = await self._listed_locked(parent)
            if name in children:
                raise exists(path)
            self._require("symlinks", path)
            if not target or len(os.fsencode(target)) > paths.MAX_PATH_BYTES:
                raise FsError(errno.ENAMETOOLONG if target else errno.ENOENT)
            node = self.inodes.new_node(
                parent, name, "symlink", mode=0o777, size=len(os.fsencode(target)), target=target
            )
            self._journal_add("symlink", path, target=target, expect=Expect.ABSENT)
            node.lookups += 1
            return node

    def readlink(self, ino: int) -> str:
        node = self._node(ino)
        if node.kind != "symlink" or node.target is None:
            raise FsError(errno.EINVAL)
        return node.target

    async def rmdir(self, parent_ino: int, name: str) -> None:
        parent = self._node(parent_ino)
        async with self._ns_lock:
            node = await self._existing_child(parent, name)
            if not node.is_dir:
                raise FsError(errno.ENOTDIR)
            if await self._listed_locked(node):
                raise FsError(errno.ENOTEMPTY)
            if node.on_remote and self.remote.capabilities.empty_dirs:
                self._journal_add("delete", node.path)
            self.inodes.detach(node)

    # ------------------------------------------------------------------ files: namespace

    async def create(self, parent_ino: int, name: str, mode: int, flags: int) -> tuple[int, Node]:
        parent = self._node(parent_ino)
        path = self._valid_child_path(parent, name)
        async with self._ns_lock:
            children = await self._listed_locked(parent)
            old = children.get(name)
            if old is not None:
                if flags & os.O_EXCL:
                    raise exists(path)
                if old.is_dir:
                    raise FsError(errno.EISDIR)
                node = old  # a race with a listing can land here: open it, truncated
            else:
                node = self.inodes.new_node(parent, name, "file", mode=mode & 0o7777, size=0)
                node.local = self._is_local_name(name)
            node.lookups += 1
        async with self._lock_for(self._node_locks, node.ino):
            spool = await self._writable_spool(node, truncate=True)
            spool.dirty = True
            node.size = 0
            node.mtime = time.time()
        fh = self._new_fh()
        self._handles[fh] = Handle(fh, node, writable=True)
        node.open_count += 1
        return fh, node

    async def unlink(self, parent_ino: int, name: str) -> None:
        parent = self._node(parent_ino)
        async with self._ns_lock:
            node = await self._existing_child(parent, name)
            if node.is_dir:
                raise FsError(errno.EISDIR)
            if node.base != Expect.ABSENT and not node.local:
                self._require("delete", node.path)
            if not node.local and (node.base != Expect.ABSENT or self.journal.touches(node.path)):
                self._journal_add("delete", node.path, expect=node.base)
            self.inodes.detach(node)
            self._drop_local_content(node)
            self.writes.set_pending_blob(node.ino, None)
            if node.open_count == 0:
                self.writes.close(node.ino)

    async def rename(
        self, old_parent_ino: int, old: str, new_parent_ino: int, new: str, flags: int
    ) -> None:
        if flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        src_parent = self._node(old_parent_ino)
        dst_parent = self._node(new_parent_ino)
        dst_path = self._valid_child_path(dst_parent, new)
        async with self._ns_lock:
            node = await self._existing_child(src_parent, old)
            target = (await self._listed_locked(dst_parent)).get(new)
            if target is node:
                return
            if node.is_dir and _is_ancestor(node, dst_parent):
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            if target is not None:
                if flags & RENAME_NOREPLACE:
                    raise exists(dst_path)
                if target.is_dir:
                    if not node.is_dir:
                        raise FsError(errno.EISDIR)
                    if await self._listed_locked(target):
                        raise FsError(errno.ENOTEMPTY)
                elif node.is_dir:
                    raise FsError(errno.ENOTDIR)
            if node.is_dir:
                await self._load_subtree(node)
            src_path = node.path
            on_remote = self._on_remote(node)
            dst_local = not node.is_dir and self._is_local_name(new)
            if on_remote and not node.local:  # to a local-only name, it goes remotely
                self._require("delete" if dst_local else "rename", src_path)
            known = on_remote or self.journal.touches(src_path)
            becomes_ordinary = node.local and not dst_local
            replaced_dir = target is not None and target.is_dir and target.on_remote
            if replaced_dir and self.remote.capabilities.empty_dirs:
                assert target is not None
                self._journal_add("delete", target.path)
            # What the remote holds at the new name before our pending changes land.
            dst_base = target.base if target is not None and not target.is_dir else Expect.ABSENT
            if node.local or dst_local:
                if not node.local:  # an ordinary file becomes local-only (vim's backup)
                    await self._keep_locally(node)
                    if known:
                        self._journal_add("delete", src_path, expect=node.base)
                    node.local, node.base = True, Expect.ABSENT
                elif not dst_local:  # a local-only file becomes an ordinary name
                    node.local, node.base = False, dst_base
            elif known:
                expect = Expect.ANY if node.is_dir else node.base
                self._journal_add(
                    "rename", src_path, dst=dst_path, expect=expect, expect_to=dst_base
                )
                if not node.is_dir:
                    node.base = dst_base
            elif target is not None and not target.is_dir:
                # A file that exists only here replaces a remote one: its upload must
                # replace exactly the version being renamed over.
                node.base = dst_base
            if target is not None:
                self.inodes.detach(target)
                self._drop_local_content(target)
                self.writes.set_pending_blob(target.ino, None)
                if target.open_count == 0:
                    self.writes.close(target.ino)
            self.inodes.move(node, dst_parent, new)
            if becomes_ordinary:
                await self._journal_local_content(node)

    async def _keep_locally(self, node: Node) -> None:
        """Before an ordinary file turns local-only: give it a content file of its own
        (the journal may send and delete the one it has)."""
        spool = self.writes.get(node.ino)
        if spool is not None and spool.dirty:
            return  # its close will keep it locally
        source = spool.path if spool is not None else await self._content(node)
        blob = self.journal.new_blob_name()
        await trio.to_thread.run_sync(shutil.copyfile, source, self.journal.blob_path(blob))
        if spool is not None:
            self.writes.close(node.ino)
        self.writes.set_pending_blob(node.ino, blob)

    async def _journal_local_content(self, node: Node) -> None:
        """A local-only file was renamed to an ordinary name: send its content."""
        spool = self.writes.get(node.ino)
        if spool is not None and spool.dirty:
            return  # still being written: its close journals it under the new name
        blob = self.writes.pending_blob(node.ino)
        if blob is None:  # its content is a remote version (it was ordinary before)
            blob = self.journal.new_blob_name()
            source = await self._content(node)
            await trio.to_thread.run_sync(shutil.copyfile, source, self.journal.blob_path(blob))
            self.writes.set_pending_blob(node.ino, blob)
        self._journal_add("write", node.path, blob=blob, mode=node.mode, expect=node.base)

    async def _load_subtree(self, d: Node) -> None:
        """Before a directory moves, know everything below it: once renamed locally, its
        old remote path can no longer be listed under the new name."""
        stack = [d]
        while stack:
            n = stack.pop()
            if n.children is None or (n.on_remote and not self._authoritative(n)):
                self._ns_lock.release()
                try:
                    children = await self._listed(n)
                finally:
                    await self._ns_lock.acquire()
            else:
                children = n.children
            stack.extend(c for c in children.values() if c.is_dir)

    # ------------------------------------------------------------------ files: content

    async def open(self, ino: int, flags: int) -> tuple[int, bool]:
        """Returns (fh, keep_cache)."""
        node = self._node(ino)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        accmode = flags & os.O_ACCMODE
        writable = accmode in (os.O_WRONLY, os.O_RDWR)
        handle = Handle(self._new_fh(), node, writable)
        keep_cache = True
        async with self._lock_for(self._node_locks, ino):
            if writable and flags & os.O_TRUNC:
                spool = await self._writable_spool(node, truncate=True)
                spool.dirty = True
                node.size = 0
                node.mtime = time.time()
                keep_cache = False
            elif self.writes.get(node.ino) is None:
                path = await self._content(node)
                handle.read_fd = os.open(path, os.O_RDONLY)
                seen = self.writes.kernel_version(node.ino)
                keep_cache = node.version is not None and seen == node.version
                if self.writes.pending_blob(node.ino) is None:
                    self.writes.set_kernel_version(node.ino, node.version)
                else:
                    keep_cache = False
        self._handles[handle.fh] = handle
        node.open_count += 1
        return handle.fh, keep_cache

    async def _content(self, node: Node) -> Path:
        """A file holding the node's current content: its newest journaled content if
        the remote does not have it yet, else the cached copy of its version."""
        blob = self.writes.pending_blob(node.ino)
        if blob is not None:
            p = self.journal.blob_path(blob)
            if p.exists():
                return p
        if _local_only(node):
            empty = self.cache.temp_path()
            empty.touch()
            return empty
        # No version known yet (a name the remote took over in a conflict, not yet
        # re-listed): read whatever it holds now and learn its version from the answer.
        where = node.fetch_path or node.path
        if node.version is not None:
            cached = self.cache.lookup(where, node.version)
            if cached is not None:
                return cached
        tmp = self.cache.temp_path()
        try:
            with tmp.open("wb") as f:
                got = await self.remote.read(where, f, version=node.version)
        except RemoteError as e:
            tmp.unlink(missing_ok=True)
            self.health.failed(e)
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.health.ok()
        if got.version is not None and got.version != node.version:
            node.version = got.version
            node.fetch_path = where
        node.size = got.size
        if node.version is None:  # the remote names no version: serve it uncached
            return tmp
        return self.cache.commit(tmp, where, node.version)

    async def _writable_spool(self, node: Node, *, truncate: bool = False) -> Spool:
        """The node's working copy, made on first write (or after a close froze the last
        one): a copy of its current content, or empty."""
        spool = self.writes.get(node.ino)
        if spool is not None and not spool.frozen:
            if truncate:
                await trio.to_thread.run_sync(os.ftruncate, spool.fd, 0)
            return spool
        source = None
        if not truncate and (spool is not None or not _local_only(node)):
            source = spool.path if spool is not None else await self._content(node)
        path = await trio.to_thread.run_sync(self.writes.new_spool_file, source)
        return self.writes.adopt(node.ino, path)

    def _handle(self, fh: int) -> Handle:
        h = self._handles.get(fh)
        if h is None:
            raise FsError(errno.EBADF)
        return h

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self._handle(fh)
        spool = self.writes.get(h.node.ino)
        if spool is not None:
            return os.pread(spool.fd, size, off)
        if h.read_fd is None:
            async with self._lock_for(self._node_locks, h.node.ino):
                if h.read_fd is None:
                    h.read_fd = os.open(await self._content(h.node), os.O_RDONLY)
        return os.pread(h.read_fd, size, off)

    async def write(self, fh: int, off: int, data: bytes) -> int:
        h = self._handle(fh)
        if not h.writable:
            raise FsError(errno.EBADF)
        node = h.node
        spool = self.writes.get(node.ino)
        if spool is None or spool.frozen:
            async with self._lock_for(self._node_locks, node.ino):
                spool = await self._writable_spool(node)
        n = os.pwrite(spool.fd, data, off)
        spool.dirty = True
        node.size = max(node.size, off + n)
        node.mtime = time.time()
        return n

    async def flush(self, fh: int) -> None:
        """close(): the content becomes a journaled change; no network wait."""
        h = self._handle(fh)
        if h.writable:
            async with self._lock_for(self._node_locks, h.node.ino):
                self._commit_content(h.node)

    async def fsync(self, fh: int) -> None:
        """Durable on local disk, then acknowledged by the remote, or an error."""
        h = self._handle(fh)
        node = h.node
        if h.writable:
            async with self._lock_for(self._node_locks, node.ino):
                self._commit_content(node)
        await trio.to_thread.run_sync(self._sync_blob, node)
        self.journal.sync()  # the connection belongs to this thread
        if node.attached:
            ids = self.flusher.ids_for(node.path)
            await self.flusher.wait_for(ids, self.config.fsync_timeout)

    def _sync_blob(self, node: Node) -> None:
        blob = self.writes.pending_blob(node.ino)
        if blob is not None:
            try:
                fd = os.open(self.journal.blob_path(blob), os.O_RDONLY)
            except FileNotFoundError:
                pass  # already uploaded and moved into the cache
            else:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def _commit_content(self, node: Node) -> None:
        """Freeze a dirty spool into the journal as a pending write of the node's path."""
        spool = self.writes.get(node.ino)
        if spool is None or not spool.dirty or not node.attached:
            return
        blob = self.journal.new_blob_name()
        self.writes.freeze(node.ino, self.journal.blob_path(blob))
        if node.local:
            self._drop_local_content(node)  # the previous version of it
        else:
            self._journal_add("write", node.path, blob=blob, mode=node.mode, expect=node.base)
        self.writes.set_pending_blob(node.ino, blob)

    def _drop_local_content(self, node: Node) -> None:
        """A local-only file's content file, unless a journal row still sends it."""
        blob = self.writes.pending_blob(node.ino)
        if node.local and blob is not None and not self.journal.uses_blob(blob):
            self.journal.blob_path(blob).unlink(missing_ok=True)

    async def release(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if h is None:
            return
        _close_fd(h)
        node = h.node
        node.open_count -= 1
        if node.open_count == 0:
            spool = self.writes.get(node.ino)
            if spool is not None and spool.dirty and node.attached:
                # Written but never flushed (the kernel skipped flush): commit it now.
                async with self._lock_for(self._node_locks, node.ino):
                    self._commit_content(node)
            self.writes.close(node.ino)
        self.inodes.released(node)

    # ------------------------------------------------------------------ flusher hooks

    def applied(self, op: Planned, version: str | None, blob: Path | None) -> None:
        """The remote acknowledged `op` (as `version`)."""
        path = op.dst if op.op == "rename" and op.dst else op.path
        node = self.node_at(path)
        if op.op == "delete" or node is None:
            return
        node.on_remote = True
        if op.op == "mkdir" or version is None:
            return
        node.base = version  # the journal rebased its later changes of `path` the same way
        if op.op == "symlink":
            node.version, node.fetch_path = version, path
        elif op.op == "rename":
            node.version, node.fetch_path = version, path
            if node.is_dir:
                _move_fetch_paths(node, op.path, path)
        elif op.blob is not None and self.writes.pending_blob(node.ino) == op.blob:
            # The uploaded content is exactly this version: keep it as its cache entry
            # (no download later), and stop treating the node as pending.
            node.version, node.fetch_path = version, path
            self.writes.set_pending_blob(node.ino, None)
            self.writes.set_kernel_version(node.ino, version)
            if blob is not None and blob.exists():
                self.cache.commit(blob, path, version)

    async def adopt_remote(self, path: str) -> None:
        """Show the remote's state of `path` again (after a conflict resolved for theirs)."""
        node = self.node_at(path)
        if node is not None:
            self.writes.set_pending_blob(node.ino, None)
            spool = self.writes.get(node.ino)
            if spool is not None and not spool.dirty:
                self.writes.close(node.ino)
            if _local_only(node):  # a create that lost: the remote has the name now
                node.base = Expect.ANY
        parent = self.node_at(paths.parent_of(path)) if path else None
        if parent is not None and parent.children is not None:
            self._fresh.pop(parent.ino, None)
            try:
                async with self._lock_for(self._dir_locks, parent.ino):
                    await self._refresh(parent)
            except (RemoteError, FsError) as e:
                log.warning("could not re-list %s: %s", parent.path or "/", e)
        if node is not None:
            self.invalidator.inode(node.ino, attr_only=node.open_count > 0)

    def conflict_copy(self, path: str, copy_path: str, blob: str, size: int) -> None:
        """Show the conflict copy the flusher just journaled."""
        parent = self.node_at(paths.parent_of(copy_path))
        name = copy_path.rsplit("/", 1)[-1]
        if parent is None or parent.children is None or name in parent.children:
            return
        node = self.inodes.new_node(parent, name, "file", size=size)
        self.writes.set_pending_blob(node.ino, blob)

    # ------------------------------------------------------------------ status

    def pending(self) -> list[dict[str, object]]:
        now = time.time()
        return [
            {
                "op": r.op,
                "path": r.path,
                **({"to": r.dst} if r.dst else {}),
                "age": round(now - r.created, 1),
                "tries": r.tries,
                "state": r.state,
                **({"error": r.last_error} if r.last_error else {}),
            }
            for r in self.journal.records()
        ]

    async def drain(self, timeout: float, *, own_loop: bool = False) -> list[str]:
        """Send everything now; what is still pending afterwards. `own_loop` when the
        flusher's background task is not running."""
        for ino in self.writes.dirty_inos():  # written, still open: commit what is there
            node = self.inodes.get(ino)
            if node is not None and node.attached:
                async with self._lock_for(self._node_locks, ino):
                    self._commit_content(node)
        if own_loop:
            left = await self.flusher.drain_with_own_loop(timeout)
        else:
            left = await self.flusher.drain(timeout)
        return [r.path for r in self.journal.records() if r.id in set(left)]

    def status(self) -> dict[str, object]:
        return {
            "remote": self.remote.identity,
            "head": self.head,
            "online": self.health.online,
            "pending": self.pending(),
            "conflicts": [vars(c) for c in self.flusher.conflicts],
            "local_only": sorted(n.path for n in self.inodes.nodes() if n.local and n.attached),
            "last_error": self.health.last_error,
            "open_files": len(self._handles),
            "inodes": len(self.inodes),
            "cache_bytes": self.cache.usage(),
            "state_dir": str(self.config.state_dir),
        }


def _is_ancestor(a: Node, b: Node) -> bool:
    node: Node | None = b
    while node is not None:
        if node is a:
            return True
        node = node.parent
    return False


def _local_only(node: Node) -> bool:
    """A name the remote has never had (a file created here, not yet uploaded)."""
    if node.is_dir:
        return not node.on_remote
    return node.version is None and node.base == Expect.ABSENT


def _move_fetch_paths(d: Node, old: str, new: str) -> None:
    """A directory rename landed: its files now live under the new prefix remotely."""
    stack = [d]
    while stack:
        n = stack.pop()
        if n.fetch_path is not None and n.fetch_path.startswith(old + "/"):
            n.fetch_path = new + n.fetch_path[len(old) :]
        if n.children:
            stack.extend(n.children.values())


def _close_fd(h: Handle) -> None:
    if h.read_fd is not None:
        os.close(h.read_fd)
        h.read_fd = None
