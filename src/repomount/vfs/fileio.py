"""File handle operations: open, read, write, truncate, close, fsync. A handle reads
and writes the file's working copy (its spool), made from its current content
(sources.py); close and fsync freeze that copy into the journal as a pending write.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

import trio

from repomount.remotes.base import RemoteError
from repomount.vfs import inorder
from repomount.vfs.errors import FsError
from repomount.vfs.journal import Journal
from repomount.vfs.nodes import Node
from repomount.vfs.sources import ContentSources, no_room
from repomount.vfs.staging import Stager
from repomount.vfs.state import Handle

log = logging.getLogger(__name__)

# How long fsync waits for the remote's acknowledgement before it makes the content
# durable on local disk too (the blob, the journal's WAL, the blobs' directory: about
# 1 ms on ext4 for a new file, as long as the whole answer of a server on loopback).
# A far remote answers later: the local syncs run while its upload is on its way.
LOCAL_SYNC_AFTER = 0.003


class FileIO(ContentSources):
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
        told = self._losses(ino)  # (only what comes after it opened)
        self.handles[fh] = Handle(fh, node, writable, truncated=truncate, losses_seen=told)
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
                raise no_room()
            n = os.pwrite(f.fd, data, off)
            if f.in_order is not None:
                inorder.wrote(f, off, data if n == len(data) else data[:n], self._stager(node))
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
        """Acknowledged by the remote (durable there), or durable on local disk and an
        error; a file the remote never sees is synced locally."""
        h = self.handle(fh)
        node = h.node
        # Any descriptor's fsync makes the file's content durable, as on Linux: one
        # opened to read too, after a truncate(2) by path or another writer's writes.
        if h.commits or self.files.dirty(node.ino):
            async with self.node_lock(node.ino):
                self.commit_content(node)
        if node.attached and not node.local:
            blob = self.overlay.pending_blob(node.ino)  # (None: the remote has it all)
            where = self.journal.blob_path(blob) if blob is not None else None
            try:
                await self.acknowledged(self.flusher.ids_for(node.path), where)
            except FsError as e:
                if e.errno == errno.ESTALE:  # (this one told: not again below)
                    h.losses_seen = self._losses(node.ino)
                raise
            self._tell_lost(h)
            return
        f = self.files.get(node.ino)  # (never sent: only here)
        fd = os.dup(f.fd) if f is not None else None
        try:
            await trio.to_thread.run_sync(_sync_file, fd, self.journal)
        finally:
            if fd is not None:
                os.close(fd)
        self._tell_lost(h)

    def _losses(self, ino: int) -> int:
        return self.lost_lineage.get(ino, (0, ""))[0]

    def _tell_lost(self, h: Handle) -> None:
        """ESTALE, once per descriptor, when its file's content lost a conflict since it
        opened or last heard of one (VfsState.lost_lineage)."""
        count, what = self.lost_lineage.get(h.node.ino, (0, ""))
        if count > h.losses_seen:
            h.losses_seen = count
            raise FsError(errno.ESTALE, what)

    async def acknowledged(self, ids: list[int], blob: Path | None) -> None:
        """Until the remote has the changes `ids` (fsync, fsyncdir). The local syncs
        (the journal, and the content file `blob` if any) run only when it takes longer
        than LOCAL_SYNC_AFTER, then while the upload is on its way (no longer waited
        for once it answers), and before an error is raised. While the remote is
        unreachable the changes are tried at once, and EIO comes as soon as that fails
        (Waiting.UNREACHABLE_FOR)."""
        started = time.time()
        self.flusher.try_at_once(ids)
        try:
            with trio.move_on_after(LOCAL_SYNC_AFTER):
                await self.flusher.wait_for(ids, self.config.fsync_timeout, tried_since=started)
                return
        except FsError:
            await self._sync_here(blob)
            raise
        local = trio.CancelScope()
        failed: OSError | FsError | None = None  # (raised as itself, not in a group)

        async def sync() -> None:
            nonlocal failed
            with local:
                try:
                    await self._sync_here(blob)
                except OSError as e:
                    failed = e

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sync)
            try:
                await self.flusher.wait_for(
                    ids, self.config.fsync_timeout - LOCAL_SYNC_AFTER, tried_since=started
                )
                local.cancel()  # the remote has it: durable there
                failed = None
            except FsError as e:  # (kept until sent: the syncs end first)
                failed = failed or e
        if failed is not None:
            raise failed

    async def _sync_here(self, blob: Path | None) -> None:
        """The content file, then the journal, in a worker thread. It opens the blob by
        its name (gone once sent: nothing to sync), so a wait cancelled before or
        after the thread starts leaves nothing of ours open."""
        await trio.to_thread.run_sync(_sync_blob, blob, self.journal, abandon_on_cancel=True)

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
                    self.lost_lineage.pop(node.ino, None)
                    if node.ino in self.held_back:  # a listing left it behind: re-list
                        self.held_back.discard(node.ino)
                        if node.parent is not None:
                            self.expire(node.parent.ino)
        self.inodes.released(node)


def _too_large(node: Node, limit: int) -> FsError:
    return FsError(errno.EFBIG, f"{node.path}: the remote takes files of at most {limit} bytes")


def _sync_file(fd: int | None, journal: Journal) -> None:
    """A file's content by its descriptor, then the journal (worker thread)."""
    if fd is not None:
        os.fsync(fd)
    journal.sync()


def _sync_blob(blob: Path | None, journal: Journal) -> None:
    """A content file by its name, then the journal (worker thread)."""
    if blob is not None:
        try:
            fd = os.open(blob, os.O_RDONLY)
        except FileNotFoundError:  # (sent and settled meanwhile)
            pass
        else:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    journal.sync()


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
