"""The vfs facade: every filesystem operation the fuse layer calls, in terms of nodes.

No pyfuse3 and no httpx here: remote access goes through `remotes.base.Remote`, kernel
cache invalidation through the `Invalidator` the fuse layer hands in, errors leave as
`FsError` or `RemoteError` and are mapped to errno in `fuse/errors.py`.
"""

from __future__ import annotations

import errno
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cachetools
import trio

from repomount import paths
from repomount.remotes.base import (
    Applied,
    Change,
    Conflicted,
    Delete,
    Entry,
    Expect,
    Failed,
    Mkdir,
    NotFound,
    Remote,
    RemoteError,
    Rename,
    Unavailable,
)
from repomount.vfs.content import ContentCache
from repomount.vfs.errors import FsError, exists, not_found
from repomount.vfs.nodes import InodeTable, Node, child_path
from repomount.vfs.writes import Spool, WriteState

log = logging.getLogger(__name__)

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


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
    state_dir: Path  # this mount's own state directory (conflict copies, journal)
    metadata_ttl: float = 5.0
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
        self.cache = ContentCache(config.cache_dir)
        self.writes = WriteState(self.cache)
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
        self.conflicts: list[dict[str, str]] = []
        self.last_error: str | None = None
        self.online = True

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        info = await self.remote.info()
        self.head = info.head

    async def close(self) -> None:
        for h in list(self._handles.values()):
            self._close_handle_fds(h)
        self.writes.close_all()

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

    def _remote_failed(self, err: RemoteError) -> None:
        self.last_error = f"{type(err).__name__}: {err.message}"
        if isinstance(err, Unavailable):
            self.online = False

    # ------------------------------------------------------------------ listing

    async def _listed(self, d: Node) -> dict[str, Node]:
        """The children of directory `d`, from a listing no older than the metadata TTL."""
        if not d.is_dir:
            raise FsError(errno.ENOTDIR)
        if d.children is not None and (d.ino in self._fresh or not d.on_remote):
            return d.children
        async with self._lock_for(self._dir_locks, d.ino):
            if d.children is not None and d.ino in self._fresh:
                return d.children
            try:
                listing = await self.remote.list_tree(d.path)
            except NotFound:
                if d.children is not None and not d.on_remote:
                    return d.children
                raise not_found(d.path) from None
            except Unavailable as e:
                self._remote_failed(e)
                if d.children is not None:
                    return d.children  # offline: serve what we know
                raise
            self.online = True
            self.head = listing.head or self.head
            async with self._ns_lock:
                if d.attached or d is self.inodes.root:
                    self._merge_listing(d, listing.entries)
            self._fresh[d.ino] = True
        assert d.children is not None
        return d.children

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
                    on_remote=True,
                    mtime=e.mtime if e.mtime is not None else time.time(),
                    mode=e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644),
                )
                continue
            changed = node.version != e.version or node.size != e.size
            node.on_remote = True
            node.version = e.version
            node.size = e.size
            if e.mtime is not None:
                node.mtime = e.mtime
            if e.mode is not None:
                node.mode = e.mode
            if changed and not first_time:
                self.invalidator.inode(node.ino, attr_only=node.open_count > 0)
        for name, node in list(d.children.items()):
            if name in seen or self._busy(node) or not node.on_remote:
                continue
            self.inodes.detach(node)  # gone on the remote
            self.invalidator.entry(d.ino, name, node.ino)

    def _busy(self, node: Node) -> bool:
        """A node with local state the remote has not seen must not be replaced by a
        listing: unsent writes, or a name that exists only here."""
        return self.writes.dirty(node.ino) or (not node.on_remote and node.kind != "dir")

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

    def forget(self, items: Sequence[tuple[int, int]]) -> None:
        for ino, count in items:
            self.inodes.forget(ino, count)

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
        if mode is not None:
            node.mode = mode & 0o7777
        if mtime is not None:
            node.mtime = mtime
        if size is not None:
            if node.is_dir:
                raise FsError(errno.EISDIR)
            async with self._lock_for(self._node_locks, ino):
                spool = await self._spool_for(node)
                await trio.to_thread.run_sync(os.ftruncate, spool.fd, size)
                node.size = size
                node.mtime = time.time() if mtime is None else mtime
                spool.dirty = True
            if node.open_count == 0:
                # truncate(2) on a closed file: no close() will follow to commit it.
                await self._upload(node)
                self._retire_spool(node)
        return node

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

    def readdir(self, fh: int, start: int) -> Iterator[tuple[int, str, Node]]:
        """(next_id, name, node) from offset `start`; names removed since opendir are
        skipped, so offsets never skip or repeat a living entry."""
        dh = self._dirs[fh]
        children = dh.node.children or {}
        for i in range(start, len(dh.names)):
            node = children.get(dh.names[i])
            if node is not None:
                yield i + 1, dh.names[i], node

    def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    async def mkdir(self, parent_ino: int, name: str, mode: int) -> Node:
        parent = self._node(parent_ino)
        path = self._valid_child_path(parent, name)
        async with self._ns_lock:
            children = await self._listed_locked(parent)
            if name in children:
                raise exists(path)
            on_remote = False
            if self.remote.capabilities.empty_dirs:
                await self._apply_one(Mkdir(path, key=_key()))
                on_remote = True
            node = self.inodes.new_node(parent, name, "dir", mode=mode & 0o7777)
            node.on_remote = on_remote
            node.lookups += 1
            self._fresh[node.ino] = True
            return node

    async def rmdir(self, parent_ino: int, name: str) -> None:
        parent = self._node(parent_ino)
        async with self._ns_lock:
            children = await self._listed_locked(parent)
            node = children.get(name)
            if node is None:
                raise not_found(child_path(parent, name))
            if not node.is_dir:
                raise FsError(errno.ENOTDIR)
            if await self._listed_locked(node):
                raise FsError(errno.ENOTEMPTY)
            if node.on_remote and self.remote.capabilities.empty_dirs:
                try:
                    await self._apply_one(Delete(node.path, key=_key()))
                except NotFound:
                    pass
            self.inodes.detach(node)

    async def _listed_locked(self, d: Node) -> dict[str, Node]:
        """`_listed` for callers holding the namespace lock (the merge needs it too)."""
        if d.children is not None and (d.ino in self._fresh or not d.on_remote):
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
            raise FsError(errno.ENAMETOOLONG if "long" in str(e) else errno.EINVAL, str(e)) from e

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
                # O_CREAT on an existing name: the kernel normally looks up first, but a
                # race with a listing can land here; open the existing file, truncated.
                node = old
            else:
                node = self.inodes.new_node(parent, name, "file", mode=mode & 0o7777, size=0)
            node.lookups += 1
        async with self._lock_for(self._node_locks, node.ino):
            spool = await self._spool_for(node, truncate=True)
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
            children = await self._listed_locked(parent)
            node = children.get(name)
            if node is None:
                raise not_found(child_path(parent, name))
            if node.is_dir:
                raise FsError(errno.EISDIR)
            if node.on_remote:
                expect = node.version if node.version is not None else Expect.ANY
                try:
                    await self._apply_one(Delete(node.path, expect=expect, key=_key()))
                except NotFound:
                    pass
            self.inodes.detach(node)
            self.writes.discard_if_unused(node)

    async def rename(
        self, old_parent_ino: int, old: str, new_parent_ino: int, new: str, flags: int
    ) -> None:
        if flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        src_parent = self._node(old_parent_ino)
        dst_parent = self._node(new_parent_ino)
        dst_path = self._valid_child_path(dst_parent, new)
        async with self._ns_lock:
            src_children = await self._listed_locked(src_parent)
            dst_children = await self._listed_locked(dst_parent)
            node = src_children.get(old)
            if node is None:
                raise not_found(child_path(src_parent, old))
            target = dst_children.get(new)
            if target is node:
                return
            if node.is_dir and _is_ancestor(node, dst_parent):
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            changes: list[Change] = []
            if target is not None:
                if flags & RENAME_NOREPLACE:
                    raise exists(dst_path)
                if target.is_dir:
                    if not node.is_dir:
                        raise FsError(errno.EISDIR)
                    if await self._listed_locked(target):
                        raise FsError(errno.ENOTEMPTY)
                    if target.on_remote and self.remote.capabilities.empty_dirs:
                        changes.append(Delete(target.path, key=_key()))
                elif node.is_dir:
                    raise FsError(errno.ENOTDIR)
            if node.on_remote:
                expect = node.version if (node.version and not node.is_dir) else Expect.ANY
                changes.append(Rename(node.path, dst_path, expect=expect, key=_key()))
            elif target is not None and target.on_remote and not target.is_dir:
                # A file that exists only here replaces a remote one: its upload must
                # replace exactly the version being renamed over.
                node.on_remote = True
                node.version = target.version
            if changes:
                await self._apply(changes)
            if target is not None:
                self.inodes.detach(target)
                self.writes.discard_if_unused(target)
            self.inodes.move(node, dst_parent, new)

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
                spool = await self._spool_for(node, truncate=True)
                spool.dirty = True
                node.size = 0
                node.mtime = time.time()
                keep_cache = False
            elif not self.writes.has(node.ino):
                path = await self._fetch(node)
                handle.read_fd = os.open(path, os.O_RDONLY)
                keep_cache = (
                    node.version is not None
                    and self.writes.kernel_version(node.ino) == node.version
                )
                self.writes.set_kernel_version(node.ino, node.version)
        self._handles[handle.fh] = handle
        node.open_count += 1
        return handle.fh, keep_cache

    async def _fetch(self, node: Node) -> Path:
        """The cached content of the node's current version, fetched if needed."""
        if node.version is None:
            if not node.on_remote:
                return self.cache.new_spool(None)  # defensive: an empty file
            raise FsError(errno.EIO, f"{node.path}: the remote gives no version")
        cached = self.cache.lookup(node.path, node.version)
        if cached is not None:
            return cached
        tmp = self.cache.temp_path()
        try:
            with tmp.open("wb") as f:
                got = await self.remote.read(node.path, f, version=node.version)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if got.version is not None and got.version != node.version:
            node.version = got.version
        node.size = got.size
        assert node.version is not None
        return self.cache.commit(tmp, node.path, node.version)

    async def _spool_for(self, node: Node, *, truncate: bool = False) -> Spool:
        """The node's working copy, created on first write: a copy of its content."""
        spool = self.writes.get(node.ino)
        if spool is not None:
            if truncate:
                await trio.to_thread.run_sync(os.ftruncate, spool.fd, 0)
            return spool
        source = None
        if not truncate and node.on_remote:
            source = await self._fetch(node)
        path = await trio.to_thread.run_sync(self.cache.new_spool, source)
        return self.writes.adopt(node.ino, path)

    def _handle(self, fh: int) -> Handle:
        h = self._handles.get(fh)
        if h is None:
            raise FsError(errno.EBADF)
        return h

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self._handle(fh)
        spool = self.writes.get(h.node.ino)
        fd = spool.fd if spool is not None else h.read_fd
        if fd is None:
            async with self._lock_for(self._node_locks, h.node.ino):
                path = await self._fetch(h.node)
                h.read_fd = os.open(path, os.O_RDONLY)
            fd = h.read_fd
        return os.pread(fd, size, off)

    async def write(self, fh: int, off: int, data: bytes) -> int:
        h = self._handle(fh)
        if not h.writable:
            raise FsError(errno.EBADF)
        node = h.node
        # The node lock keeps writes out while an upload reads the spool.
        async with self._lock_for(self._node_locks, node.ino):
            spool = await self._spool_for(node)
            n = os.pwrite(spool.fd, data, off)
            spool.dirty = True
            node.size = max(node.size, off + n)
            node.mtime = time.time()
        return n

    async def flush(self, fh: int) -> None:
        """close(): commit the file's content if it changed."""
        h = self._handle(fh)
        if h.writable:
            await self._upload(h.node)

    async def fsync(self, fh: int) -> None:
        h = self._handle(fh)
        if h.writable:
            spool = self.writes.get(h.node.ino)
            if spool is not None:
                await trio.to_thread.run_sync(os.fsync, spool.fd)
            await self._upload(h.node)

    async def release(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if h is None:
            return
        self._close_handle_fds(h)
        node = h.node
        node.open_count -= 1
        if node.open_count == 0:
            self._retire_spool(node)
        self.inodes.released(node)

    def _close_handle_fds(self, h: Handle) -> None:
        if h.read_fd is not None:
            os.close(h.read_fd)
            h.read_fd = None

    def _retire_spool(self, node: Node) -> None:
        """After the last close: a clean working copy becomes the cached content of its
        version; a dirty one (its upload failed) stays, still pending."""
        if not node.attached:
            self.writes.discard(node.ino)
            return
        spool = self.writes.get(node.ino)
        if spool is None or spool.dirty or node.open_count:
            return
        if node.version is not None:
            self.writes.retire_into_cache(node.ino, node.path, node.version)
        else:
            self.writes.discard(node.ino)

    # ------------------------------------------------------------------ uploads

    async def _upload(self, node: Node) -> None:
        async with self._lock_for(self._node_locks, node.ino):
            spool = self.writes.get(node.ino)
            if spool is None or not spool.dirty or not node.attached:
                return
            write = await trio.to_thread.run_sync(
                lambda: self.writes.make_write(
                    spool,
                    node.path,
                    expect=node.version if node.on_remote and node.version else Expect.ABSENT,
                    mode=node.mode,
                )
            )
            try:
                result = await self.remote.apply([write])
            except RemoteError as e:
                self._remote_failed(e)
                raise
            outcome = result.outcomes[0]
            if isinstance(outcome, Applied):
                self.online = True
                self.head = result.head or self.head
                node.version = outcome.version
                node.on_remote = True
                node.size = write.size
                spool.dirty = False
                self.writes.set_kernel_version(node.ino, node.version)
                return
            if isinstance(outcome, Conflicted):
                saved = await trio.to_thread.run_sync(self._save_conflict, node, spool)
                self.writes.discard(node.ino)
                await self._adopt_remote_state(node, outcome.current)
                raise FsError(
                    errno.ESTALE,
                    f"{node.path} changed on the remote; your version was saved to {saved}",
                )
            assert isinstance(outcome, Failed)
            self._remote_failed(outcome.error)
            raise outcome.error

    async def _adopt_remote_state(self, node: Node, current: str | None) -> None:
        """Show the remote's version of `node` again (after losing a conflict)."""
        entry = None
        try:
            entry = await self.remote.stat(node.path)
        except RemoteError as e:
            log.warning("could not stat %s after a conflict: %s", node.path, e)
        node.version = entry.version if entry else current
        node.on_remote = entry is not None or current is not None
        if entry is not None:
            node.size = entry.size
            node.mtime = entry.mtime or node.mtime
        if node.parent is not None:
            self._fresh.pop(node.parent.ino, None)
        self.invalidator.inode(node.ino, attr_only=node.open_count > 0)

    def _save_conflict(self, node: Node, spool: Spool) -> Path:
        """Keep the losing local content where the user can find it."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = self.config.state_dir / "conflicts" / stamp / node.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.writes.copy_out(spool, dest)
        self.conflicts.append({"path": node.path, "saved": str(dest), "time": stamp})
        log.warning(
            "conflict: %s changed on the remote; local version saved to %s", node.path, dest
        )
        return dest

    async def _apply_one(self, change: Change) -> None:
        await self._apply([change])

    async def _apply(self, changes: list[Change]) -> None:
        """Send namespace changes now; raise on anything but success."""
        try:
            result = await self.remote.apply(changes)
        except RemoteError as e:
            self._remote_failed(e)
            raise
        self.online = True
        self.head = result.head or self.head
        for outcome in result.outcomes:
            if isinstance(outcome, Conflicted):
                raise FsError(errno.ESTALE, "changed on the remote meanwhile")
            if isinstance(outcome, Failed):
                raise outcome.error

    # ------------------------------------------------------------------ status

    def pending(self) -> list[str]:
        """Paths whose local content the remote has not acknowledged."""
        out = []
        for ino in self.writes.dirty_inos():
            node = self.inodes.get(ino)
            if node is not None and node.attached:
                out.append(node.path)
        return sorted(out)

    async def drain(self) -> list[str]:
        """Try to send every pending change now; returns what is still pending."""
        for ino in self.writes.dirty_inos():
            node = self.inodes.get(ino)
            if node is None or not node.attached:
                continue
            try:
                await self._upload(node)
            except (RemoteError, FsError) as e:
                log.warning("could not upload %s: %s", node.path, e)
            if node.open_count == 0:
                self._retire_spool(node)
        return self.pending()

    def status(self) -> dict[str, object]:
        return {
            "remote": self.remote.identity,
            "head": self.head,
            "online": self.online,
            "pending": self.pending(),
            "conflicts": list(self.conflicts),
            "last_error": self.last_error,
            "open_files": len(self._handles),
            "inodes": len(self.inodes),
        }


def _is_ancestor(a: Node, b: Node) -> bool:
    node: Node | None = b
    while node is not None:
        if node is a:
            return True
        node = node.parent
    return False


def _key() -> str:
    return uuid.uuid4().hex
