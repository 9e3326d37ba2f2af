"""pyfuse3 Operations: a thin translation from kernel requests to vfs calls."""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from repomount.fuse.errors import to_errno
from repomount.remotes.errors import RemoteError
from repomount.vfs.core import Vfs
from repomount.vfs.errors import FsError
from repomount.vfs.nodes import Node

log = logging.getLogger(__name__)

# How long the kernel may trust names and attributes at most: the vfs's own
# --metadata-ttl. What changes under us meanwhile (a listing's merge, a change feed
# entry, a conflict resolved) is invalidated in the kernel explicitly.
KERNEL_TTL_MAX = 5.0

P = ParamSpec("P")
R = TypeVar("R")


def _errors(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Only FUSEError may leave a handler (anything else ends pyfuse3.main())."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (FsError, RemoteError, OSError) as e:
            code = to_errno(e)
            if code not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY):
                log.info("%s: %s (%s)", fn.__name__, e, errno.errorcode.get(code, code))
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("%s failed unexpectedly", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, vfs: Vfs) -> None:
        super().__init__()
        self.vfs = vfs
        self.kernel_ttl = min(vfs.config.metadata_ttl, KERNEL_TTL_MAX)

    def attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.generation = 0
        a.entry_timeout = self.kernel_ttl
        a.attr_timeout = self.kernel_ttl
        a.st_mode = node.st_mode
        a.st_nlink = node.nlink
        a.st_uid = node.uid
        a.st_gid = node.gid
        a.st_rdev = 0
        a.st_size = node.size
        a.st_blksize = 4096
        a.st_blocks = (node.size + 511) // 512
        a.st_mtime_ns = node.mtime_ns
        a.st_atime_ns = node.atime_ns if node.atime_ns is not None else node.mtime_ns
        a.st_ctime_ns = node.ctime_ns if node.ctime_ns >= 0 else node.mtime_ns
        return a

    # ------------------------------------------------------------------ metadata

    @_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self.attrs(await self.vfs.lookup(parent_inode, os.fsdecode(name)))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            self.vfs.forget(inode_list)
        except Exception:  # forget must never raise
            log.exception("forget failed")

    @_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attrs(self.vfs.getattr(inode))

    @_errors
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = await self.vfs.setattr(
            inode,
            fh,
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
        )
        return self.attrs(node)

    @_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        for key, value in self.vfs.statfs().items():
            setattr(data, key, value)
        return data

    # ------------------------------------------------------------------ directories

    @_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return await self.vfs.opendir(inode)

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if start_id == 0:
            await self.vfs.rewinddir(fh)
        for next_id, name, node, counted in self.vfs.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self.attrs(node), next_id):
                break
            if counted:  # the kernel now holds a reference to it ("." and ".." excepted)
                self.vfs.note_lookup(node)

    @_errors
    async def releasedir(self, fh: int) -> None:
        self.vfs.releasedir(fh)

    @_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.vfs.fsyncdir(self.vfs.dirs[fh].node.ino)

    @_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = await self.vfs.mkdir(parent_inode, os.fsdecode(name), mode, owner=(ctx.uid, ctx.gid))
        return self.attrs(node)

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.vfs.rmdir(parent_inode, os.fsdecode(name))

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.vfs.unlink(parent_inode, os.fsdecode(name))

    @_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        await self.vfs.rename(
            parent_inode_old,
            os.fsdecode(name_old),
            parent_inode_new,
            os.fsdecode(name_new),
            flags,
        )

    # ------------------------------------------------------------------ files

    @_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        fh, keep_cache = await self.vfs.open(inode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache)

    @_errors
    async def create(
        self,
        parent_inode: int,
        name: bytes,
        mode: int,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, node = await self.vfs.create(
            parent_inode, os.fsdecode(name), mode, flags, owner=(ctx.uid, ctx.gid)
        )
        return pyfuse3.FileInfo(fh=fh, keep_cache=False), self.attrs(node)

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.vfs.read(fh, off, size)

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.vfs.write(fh, off, buf)

    @_errors
    async def flush(self, fh: int) -> None:
        await self.vfs.flush(fh)

    @_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.vfs.fsync(fh)

    async def release(self, fh: int) -> None:
        try:
            await self.vfs.release(fh)
        except OSError as e:  # (the state directory's disk full): the file stays written
            log.warning("release: %s", e)
        except Exception:  # errors here reach nobody; log them
            log.exception("release failed")

    @_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = await self.vfs.symlink(
            parent_inode, os.fsdecode(name), os.fsdecode(target), owner=(ctx.uid, ctx.gid)
        )
        return self.attrs(node)

    @_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(self.vfs.readlink(inode))

    # Not supported: say so clearly (git falls back to rename when link() fails).
    async def link(self, *args: Any, **kwargs: Any) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)

    @_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if not stat.S_ISREG(mode):  # devices, FIFOs, sockets: no remote stores them
            raise pyfuse3.FUSEError(errno.EPERM)
        # mknod(2) of a regular file (Python's os.mknod by default): an empty file, as
        # open(O_CREAT | O_EXCL) then close would make it.
        fh, node = await self.vfs.create(
            parent_inode,
            os.fsdecode(name),
            mode,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL,
            owner=(ctx.uid, ctx.gid),
        )
        try:
            await self.vfs.flush(fh)
        finally:
            await self.vfs.release(fh)
        return self.attrs(node)
