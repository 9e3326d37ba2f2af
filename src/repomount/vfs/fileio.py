"""File content operations: open, read, write, truncate, close, fsync.

A file's content, newest first: its open spool (files.py), its pending blob (the
overlay's: closed but not acknowledged), the cached copy of its remote version, the
remote. Appending to, truncating or rewriting a file whose last close is still pending
starts from that pending content, exactly as on a local disk.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import BinaryIO, cast

import trio

from repomount.remotes.base import Capped, NotFound, RemoteError
from repomount.vfs import inorder
from repomount.vfs.errors import FsError
from repomount.vfs.files import OpenFile, fill_spool
from repomount.vfs.journal import Journal
from repomount.vfs.nodes import Node
from repomount.vfs.partial import LARGE_FILE
from repomount.vfs.sparse import Sparse
from repomount.vfs.staging import Stager
from repomount.vfs.state import Handle, local_only
from repomount.vfs.walks import Walks

log = logging.getLogger(__name__)


class FileIO(Walks):
    # ------------------------------------------------------------------ content

    async def open_content(self, node: Node) -> tuple[int, Sparse | None]:
        """A read-only descriptor of the node's current closed content, and the edits
        it holds if it is edits of a content never fetched (sparse.py; its other bytes
        are not there)."""
        f = await self._settled_file(node)
        if f is not None:
            return os.dup(f.fd), f.sparse.copy() if f.sparse else None
        pending = self._pending_content(node)
        if pending is not None:
            return pending
        if node.kind == "symlink":  # shown as a file (trust.py): its target's text
            return _text_fd(node.target or ""), None
        if local_only(node) or node.local:  # nothing remote: it is empty
            return os.open(os.devnull, os.O_RDONLY), None
        # No version known yet (a name the remote took over in a conflict, not yet
        # re-listed): read whatever it holds now and learn its version from the answer.
        for attempt in range(3):
            where = node.source
            if node.version is not None:
                cached = self.cache.lookup(where, node.version)
                if cached is not None:
                    try:
                        return os.open(cached, os.O_RDONLY), None
                    except FileNotFoundError:
                        pass  # evicted just now
            if node.version is not None:
                await self._read_ahead(node, where, node.version)
                cached = self.cache.lookup(where, node.version)
                if cached is not None:
                    try:
                        return os.open(cached, os.O_RDONLY), None
                    except FileNotFoundError:
                        pass  # evicted just now
            tmp = self.cache.temp_path()
            try:
                with tmp.open("wb") as out:
                    dest = out if node.version is None else Capped(out, node.size, where)
                    got = await self.remote.read(where, cast(BinaryIO, dest), version=node.version)
                break
            except NotFound:
                tmp.unlink(missing_ok=True)
                if node.source == where and node.fetch_path and attempt < 2:
                    # Kept at its old name while a rename of ours (of it, or of a
                    # directory above) goes out: the remote may have applied it, its
                    # answer and our bookkeeping of it still on the way.
                    await self.flusher.outcomes_applied(self.config.fsync_timeout)
                if node.source == where or attempt == 2:
                    raise
                # A rename of ours landed meanwhile: the remote keeps it elsewhere now.
            except RemoteError as e:
                tmp.unlink(missing_ok=True)
                self.health.failed(e)
                raise
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        self.health.ok()
        # Local content that appeared meanwhile wins over the download.
        f = await self._settled_file(node)
        if f is not None:
            tmp.unlink(missing_ok=True)
            return os.dup(f.fd), f.sparse.copy() if f.sparse else None
        newer = self._pending_content(node)
        if newer is not None:
            tmp.unlink(missing_ok=True)
            return newer
        fd = os.open(tmp, os.O_RDONLY)
        if got.version is not None and got.version != node.version:
            node.version = got.version
            node.read_from(where)
        node.size = got.size
        if node.version is None or self.cache.commit(tmp, where, node.version) is None:
            tmp.unlink(missing_ok=True)  # uncached: no version named, or not movable
        return fd, None

    def _pending_content(self, node: Node) -> tuple[int, Sparse | None] | None:
        """The node's pending content (descriptor, edits if sparse), or None. The edits
        are looked up before the descriptor is taken: should the blob be laid over its
        base meanwhile, its whole content is taken for edits, never the other way."""
        blob = self.overlay.pending_blob(node.ino)
        edits = self.journal.sparse_of(blob) if blob is not None else None
        fd = self.overlay.open_pending(node.ino)
        if fd is None:
            return None
        return fd, edits.copy() if edits else None

    async def _settled_file(self, node: Node) -> OpenFile | None:
        """The inode's OpenFile with all of its content there (a large file still
        arriving is waited for, and checked); None when it has none. Looked up again
        after every wait: the last handle may have closed it meanwhile."""
        while True:
            f = self.files.get(node.ino)
            if f is None or f.partial is None or f.partial.checked:
                return f
            partial = f.partial
            try:
                await partial.finished()
            except FsError:
                if not partial.closed:
                    raise  # (closed: its last handle went; look again)
            if self.files.get(node.ino) is f and f.partial is partial and partial.checked:
                return f

    async def content_to_new_blob(self, node: Node) -> str:
        """A new journal blob holding the node's current content (copied from a
        descriptor, in a worker thread)."""
        fd, edits = await self.open_content(node)
        try:
            blob = await trio.to_thread.run_sync(self.overlay.new_blob_from, fd)
        finally:
            os.close(fd)
        if edits is not None:  # (marked before any row sends it)
            self.journal.mark_sparse(blob, edits)
        return blob

    async def _ftruncate(self, f: OpenFile, size: int) -> None:
        """Truncate a spool in a worker thread. It is marked dirty first (nothing may
        take it for clean meanwhile), and the thread uses its own duplicate fd."""
        f.dirty = True
        f.stop_hashing()  # (no longer written from empty in order)
        fd = os.dup(f.fd)
        try:
            await trio.to_thread.run_sync(os.ftruncate, fd, size)
        finally:
            os.close(fd)

    async def _open_file(self, node: Node) -> OpenFile:
        """The inode's OpenFile, made from its current content if it has none: a large
        remote file not cached yet is read while it arrives (partial.py)."""
        f = self.files.get(node.ino)
        if f is None:
            partial, edits = None, None
            where = node.source
            if self._streamable(node, where):
                assert node.version is not None
                fd, partial = self.streams.open(where, node.version, node.size)
            else:
                fd, edits = await self.open_content(node)
            f = self.files.get(node.ino)
            if f is not None:  # another handle got there first
                os.close(fd)
                if partial is not None:
                    partial.release()
            else:
                f = self.files.set_content(node.ino, fd, partial)
                f.sparse = edits
        return f

    def _streamable(self, node: Node, where: str) -> bool:
        return (
            node.size >= LARGE_FILE
            and node.version is not None
            and self.remote.capabilities.ranged_read
            and self.streams.running
            and self.overlay.pending_blob(node.ino) is None
            and not (local_only(node) or node.local)
            and not self.cache.has(where, node.version)
        )

    async def _spool(
        self, node: Node, *, truncate: bool = False, offline: Sparse | None = None
    ) -> OpenFile:
        """The node's writable working copy; made on first write (or after a close froze
        the last one) from its current content via a descriptor, or empty."""
        f = self.files.get(node.ino)
        if f is not None and f.writable:
            if truncate:
                await self._ftruncate(f, 0)
                f.start_in_order()  # (empty again)
            return f
        src: int | None = None
        edits: Sparse | None = offline
        if not truncate and offline is None:
            try:
                src, edits = await self.open_content(node)  # (waits for every byte)
            except RemoteError as e:
                edits = self._offline_edits(node, e)
            if src is not None and edits is None and _size(src) == 0:
                # Empty (dd, say, opens its output, dup2()s and closes it before it
                # writes): a new empty spool, counted while written in order.
                os.close(src)
                src = None
        length = edits.length if edits and src is None else 0
        if src is not None and not self.journal.room.room_for(_size(src)):
            os.close(src)
            raise _no_room()
        path, fd = self.files.new_spool()  # (made ahead: readyfiles.py)
        try:
            if src is not None or length:
                await trio.to_thread.run_sync(fill_spool, fd, src, length)
        except BaseException:
            self.files.discard_spool(path, fd)
            raise
        finally:
            if src is not None:
                os.close(src)
        f = self.files.adopt_spool(node.ino, path, fd)
        f.sparse = edits
        if src is None and length == 0 and edits is None:
            f.start_in_order()  # an empty spool: hashed while written in order
        return f

    def _offline_edits(self, node: Node, error: RemoteError) -> Sparse:
        """The remote cannot give the file's content now (offline): edit it anyway,
        over its listed version, to be laid over that version once it can be fetched
        (sparse.py). Anything else raises the error."""
        if not error.retryable or node.version is None or node.local or local_only(node):
            raise error
        log.info("%s: content unreachable, edited over version %s", node.path, node.version)
        where = node.source
        return Sparse(where, node.version, keep=node.size, length=node.size)

    async def truncate_content(self, node: Node) -> None:
        """create() and open(O_TRUNC): the file starts empty."""
        async with self.node_lock(node.ino):
            f = await self._spool(node, truncate=True)
            f.dirty = True
            node.size = 0
            node.mtime = node.ctime = time.time()

    # ------------------------------------------------------------------ handles

    async def open(self, ino: int, flags: int) -> tuple[int, bool]:
        """Returns (fh, keep_cache)."""
        node = self.node(ino)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        writable = flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
        truncate = bool(flags & os.O_TRUNC)  # (with O_RDONLY too: Linux empties the file)
        if (writable or truncate) and node.link_as_file:
            raise FsError(errno.EACCES, f"{node.path}: a link that leaves the mount, read-only")
        keep_cache = True
        node.open_count += 1  # held from here: no forget or listing drops it
        try:
            if truncate:
                await self.truncate_content(node)
                keep_cache = False
            else:
                async with self.node_lock(ino):
                    fresh = self.files.get(ino) is None
                    try:
                        await self._open_file(node)
                    except RemoteError as e:
                        if not writable:
                            raise
                        await self._spool(node, offline=self._offline_edits(node, e))
                if fresh:
                    seen = node.paged
                    keep_cache = node.version is not None and seen == node.version
                    if self.overlay.pending_blob(ino) is None:
                        node.paged = node.version
                    else:
                        keep_cache = False
            if not keep_cache:
                # A remote change the kernel is still to hear of: until it is told, it
                # holds the old size, and reads of the new content stop there.
                await self.invalidator.told(ino)
        except BaseException:
            node.open_count -= 1
            if node.open_count == 0:
                self.files.close(ino)
            raise
        fh = self.new_fh()
        self.handles[fh] = Handle(fh, node, writable, truncated=truncate)
        return fh, keep_cache

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self.handle(fh)
        while True:
            f = self.files.get(h.node.ino)
            if f is None:  # (cannot happen while the handle is open)
                raise FsError(errno.EBADF)
            partial = f.partial
            if f.sparse is not None and not f.sparse.covers(off, off + size):
                raise FsError(errno.EIO, f"{h.node.path}: bytes never fetched (edited offline)")
            if partial is None:
                return await _pread(f.fd, size, off)
            try:
                await partial.ready(off, size)  # (at once when every byte is there)
            except FsError:
                if not partial.closed:
                    raise
                continue  # replaced meanwhile (a truncating open): read what is there now
            if f.partial is partial:
                return await _pread(f.fd, size, off)

    async def write(self, fh: int, off: int, data: bytes) -> int:
        h = self.handle(fh)
        if not h.writable:
            raise FsError(errno.EBADF)
        node = h.node
        async with self.node_lock(node.ino):
            data = self._within_limit(node, off, data)
            f = await self._spool(node)
            if not self.journal.room.room_for(len(data)):
                raise _no_room()
            n = os.pwrite(f.fd, data, off)
            if f.in_order is not None:
                inorder.wrote(f, off, n, self._stager(node))
            if f.sparse is not None:
                f.sparse.wrote(off, off + n)
            f.dirty = True
            node.size = max(node.size, off + n)
            node.mtime = node.ctime = time.time()
        return n

    def _within_limit(self, node: Node, off: int, data: bytes) -> bytes:
        """What of a write the remote can take (as a local filesystem cuts a write short
        at its largest file size, then refuses the next one with EFBIG)."""
        limit = self.max_file_size
        if limit is None or node.local:
            return data
        if off >= limit or node.size > limit:
            raise _too_large(node, limit)
        return data if off + len(data) <= limit else data[: limit - off]

    async def resize(self, node: Node, size: int, mtime: float | None) -> None:
        """truncate(2) / ftruncate(2)."""
        if self.max_file_size is not None and size > self.max_file_size and not node.local:
            raise _too_large(node, self.max_file_size)
        async with self.node_lock(node.ino):
            f = await self._spool(node)
            await self._ftruncate(f, size)
            if f.sparse is not None:
                f.sparse.truncated(size)
            node.size = size
            node.mtime = node.ctime = time.time() if mtime is None else mtime
            # truncate(2) by path with no writer's close() to follow (only readers, a
            # `tail -f`, hold it open): journaled now, not when the last reader goes.
            if not self._writer_open(node):
                self.commit_content(node)
                if node.open_count == 0:
                    self.files.close(node.ino)

    def _writer_open(self, node: Node) -> bool:
        """Whether a handle of `node` that journals its content on close is open."""
        return any(h.node is node and h.commits for h in self.handles.values())

    async def flush(self, fh: int) -> None:
        """close(): the content becomes a journaled change; no network wait."""
        h = self.handle(fh)
        if h.commits:
            async with self.node_lock(h.node.ino):
                self.commit_content(h.node)

    async def fsync(self, fh: int) -> None:
        """Durable on local disk, then acknowledged by the remote, or an error."""
        h = self.handle(fh)
        node = h.node
        # Any descriptor's fsync makes the file's content durable, as on Linux: one
        # opened to read too, after a truncate(2) by path or another writer's writes.
        if h.commits or self.files.dirty(node.ino):
            async with self.node_lock(node.ino):
                self.commit_content(node)
        f = self.files.get(node.ino)
        fd = os.dup(f.fd) if f is not None else None  # the frozen spool: the blob
        # The local syncs run while the upload is on its way: one wait, not two.
        failed: OSError | FsError | None = None  # (raised as itself, not in a group)

        async def sync_locally() -> None:
            nonlocal failed
            try:
                await trio.to_thread.run_sync(_sync_locally, fd, self.journal)
            except OSError as e:
                failed = e

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sync_locally)
                if node.attached and not node.local:
                    ids = self.flusher.ids_for(node.path)
                    try:
                        await self.flusher.wait_for(ids, self.config.fsync_timeout)
                    except FsError as e:
                        failed = failed or e
        finally:
            if fd is not None:
                os.close(fd)
        if failed is not None:
            raise failed

    def commit_content(self, node: Node) -> None:
        """Freeze a dirty spool into the journal as a pending write of the node's path.
        Caller holds the node lock."""
        f = self.files.get(node.ino)
        if f is None or not f.dirty:
            return
        if not node.attached:
            f.stop_hashing()
            saved = self.saved_lineage.get(node.ino)
            if saved is not None:  # its change lost (policy theirs): saved, never sent
                self.files.freeze(node.ino, saved)
                log.warning("%s: written on after its change lost; saved to %s", node.name, saved)
            return
        blob = self.journal.new_blob_name()
        spool = f.path
        assert spool is not None
        self.files.freeze(node.ino, self.journal.blob_path(blob))
        if node.local:
            self.overlay.drop_local_blob(node.ino)  # the previous content of it
        else:
            try:
                with self.journal.transaction():  # a sparse blob never looks whole
                    if f.sparse is not None:
                        self.journal.mark_sparse(blob, f.sparse)
                    self.journal_write(node, blob, node.base)
            except OSError:  # (the state directory's disk full): the close fails, and
                # the spool stays written and open, for the next close to journal
                self.files.thaw(node.ino, self.journal.blob_path(blob), spool)
                raise
        inorder.hand_over(f, blob, self._stager(node), self.flusher.digests)
        self.overlay.set_pending_blob(node.ino, blob)

    def _stager(self, node: Node) -> Stager | None:
        """Who stages the node's uploads: none for a file never sent to the remote."""
        return self.flusher.stager if node.attached and not node.local else None

    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        node = h.node
        node.open_count -= 1
        if node.open_count == 0:
            async with self.node_lock(node.ino):
                if node.open_count == 0:
                    # Written but never flushed (the kernel skipped flush): commit now.
                    self.commit_content(node)
                    self.files.close(node.ino)
                    self.saved_lineage.pop(node.ino, None)
                    if node.ino in self.held_back:  # a listing left it behind: re-list
                        self.held_back.discard(node.ino)
                        if node.parent is not None:
                            self.expire(node.parent.ino)
        self.inodes.released(node)


def _too_large(node: Node, limit: int) -> FsError:
    return FsError(errno.EFBIG, f"{node.path}: the remote takes files of at most {limit} bytes")


def _no_room() -> FsError:
    """Spool bytes may not take the journal's last room (stateroom.py)."""
    return FsError(errno.ENOSPC, "the state directory's disk is full")


def _sync_locally(fd: int | None, journal: Journal) -> None:
    """The content's file, then the journal (worker thread)."""
    if fd is not None:
        os.fsync(fd)
    journal.sync()


def _size(fd: int) -> int:
    return os.fstat(fd).st_size


def _text_fd(text: str) -> int:
    """A read-only-by-use descriptor holding `text` (memory, no file)."""
    fd = os.memfd_create("repomount-link", os.MFD_CLOEXEC)
    os.write(fd, os.fsencode(text))
    return fd


async def _pread(fd: int, size: int, off: int) -> bytes:
    # Small reads are cheaper inline than a thread hop; big ones may hit a cold disk.
    # A thread reads its own duplicate: a write may replace (and close) the inode's
    # descriptor meanwhile, and its number may be reused by another file.
    if size <= 1 << 17:
        return os.pread(fd, size, off)
    own = os.dup(fd)
    try:
        return await trio.to_thread.run_sync(os.pread, own, size, off)
    finally:
        os.close(own)
