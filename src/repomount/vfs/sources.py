"""Where a file's content comes from, newest first: its open spool (files.py), its
pending blob (the overlay's: closed but not acknowledged), the cached copy of its remote
version, the remote. Appending to, truncating or rewriting a file whose last close is
still pending starts from that pending content, exactly as on a local disk.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import BinaryIO, cast

import trio

from repomount.remotes.base import Capped, Conflict, NotFound, RemoteError
from repomount.vfs.errors import FsError
from repomount.vfs.files import OpenFile, fill_spool
from repomount.vfs.nodes import Node
from repomount.vfs.partial import LARGE_FILE
from repomount.vfs.sparse import Sparse
from repomount.vfs.state import local_only
from repomount.vfs.walks import Walks

log = logging.getLogger(__name__)


class ContentSources(Walks):
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
                fd = self._open_cached(where, node.version)
                if fd is None:
                    await self._read_ahead(node, where, node.version)
                    fd = self._open_cached(where, node.version)
                if fd is not None:
                    return fd, None
            tmp = self.cache.temp_path()
            try:
                content = -1
                try:
                    with tmp.open("wb") as out:
                        # Read back through a descriptor, not by its name: the cache
                        # directory may be emptied while the content arrives (someone
                        # clearing ~/.cache), which must not make the file look gone.
                        content = os.open(tmp, os.O_RDONLY)
                        dest = out if node.version is None else Capped(out, node.size, where)
                        got = await self.remote.read(
                            where, cast(BinaryIO, dest), version=node.version
                        )
                except BaseException:  # (its last bytes' write, as it closes, too: ENOSPC)
                    if content >= 0:
                        os.close(content)
                    raise
                break
            except NotFound:
                tmp.unlink(missing_ok=True)
                if node.source == where and node.fetch_path and attempt < 2:
                    # Kept at its old name while a rename of ours (of it, or of a
                    # directory above) goes out: the remote may have applied it, its
                    # answer and our bookkeeping of it still on the way.
                    await self.flusher.outcomes_applied(self.config.fsync_timeout)
                if node.source == where or attempt == 2:
                    self._listed_too_early(node)
                    raise
                # A rename of ours landed meanwhile: the remote keeps it elsewhere now.
            except Conflict:
                # Rewritten elsewhere since we listed it: as for one gone, above.
                tmp.unlink(missing_ok=True)
                if node.source == where:
                    self._listed_too_early(node)
                raise
            except RemoteError as e:
                tmp.unlink(missing_ok=True)
                self.health.failed(e)
                raise
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        self.health.ok()
        # Local content that appeared meanwhile wins over the download.
        try:
            f = await self._settled_file(node)
            newer = None if f is not None else self._pending_content(node)
        except BaseException:
            os.close(content)
            tmp.unlink(missing_ok=True)
            raise
        if f is not None:
            os.close(content)
            tmp.unlink(missing_ok=True)
            return os.dup(f.fd), f.sparse.copy() if f.sparse else None
        if newer is not None:
            os.close(content)
            tmp.unlink(missing_ok=True)
            return newer
        if got.version is not None and got.version != node.version:
            node.version = got.version
            node.read_from(where)
        node.size = got.size
        kept = None
        if node.version is not None:
            try:
                kept = self.cache.commit(tmp, where, node.version)
            except OSError as e:  # (only a copy: read through `content` all the same)
                log.info("%s: not kept in the content cache: %s", where, e)
        if kept is None:
            tmp.unlink(missing_ok=True)  # uncached: no version named, or not movable
        return content, None

    def _listed_too_early(self, node: Node) -> None:
        """The remote no longer has a file we listed (or has another version of it): our
        listing of its directory is older than the remote (another client changed it;
        the change feed or poll has not said so yet). It is listed again at its next
        use, so that a program that looks again finds what is there: git, after failing
        to read a pack another clone's gc replaced, re-reads objects/pack/; the kernel,
        after an open's ESTALE, looks the name up again. (Not listed here: the callers hold
        the file's node lock, which is taken after `ns_lock`, never before, and a
        listing's merge takes `ns_lock`; and many opens failing at once, each listing
        the directory, cost as many listings as files.)"""
        if node.fetch_path or node.parent is None or not node.attached:
            return  # (kept at its old name while a rename of ours goes out)
        self.expire(node.parent.ino)

    def _open_cached(self, where: str, version: str) -> int | None:
        """A descriptor of the cached (where, version), or None: not cached (or evicted
        between the lookup and the open)."""
        cached = self.cache.lookup(where, version)
        if cached is None:
            return None
        try:
            return os.open(cached, os.O_RDONLY)
        except FileNotFoundError:
            return None

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
                if f.sparse is not None:  # (offline edits: none of the base is kept)
                    f.sparse.truncated(0)
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
            raise no_room()
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


def no_room() -> FsError:
    """Spool bytes may not take the journal's last room (stateroom.py)."""
    return FsError(errno.ENOSPC, "the state directory's disk is full")


def _size(fd: int) -> int:
    return os.fstat(fd).st_size


def _text_fd(text: str) -> int:
    """A read-only-by-use descriptor holding `text` (memory, no file)."""
    fd = os.memfd_create("repomount-link", os.MFD_CLOEXEC)
    os.write(fd, os.fsencode(text))
    return fd
