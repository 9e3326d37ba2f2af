"""Driving a `Vfs` in-process through the public API the fuse layer uses.

`VfsMount` owns one Vfs over a remote, its flusher task, and can "restart from the
journal" (close without draining, a new Vfs on the same state dir, start()). The small
helpers resolve paths from the root with lookup, as the kernel would.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from repomount.remotes.base import Remote
from repomount.vfs import digests
from repomount.vfs.core import Vfs, VfsConfig
from repomount.vfs.errors import FsError
from repomount.vfs.nodes import Node

ROOT = 1
WRITE_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC

# Mount options under which changes are sent only when a test asks (drain, fsync).
HELD = {"flush_delay": 3600.0, "max_flush_window": 3600.0}


@dataclass
class VfsMount:
    remote: Remote
    base: Path
    options: dict[str, Any] = field(default_factory=dict)
    nursery: trio.Nursery | None = None  # where the flusher runs; None: no flusher task
    vfs: Vfs = field(init=False)
    generation: int = 0
    _scope: trio.CancelScope | None = None
    _stopped: trio.Event | None = None

    def config(self) -> VfsConfig:
        opts: dict[str, Any] = {
            "flush_delay": 0.0,
            "max_flush_window": 0.0,
            "metadata_ttl": 3600.0,
            "fsync_timeout": 30.0,
        }
        opts.update(self.options)
        cache = self.base / f"cache{self.generation}"  # the content cache is per mount
        return VfsConfig(cache_dir=cache, state_dir=self.base / "state", **opts)

    async def open(self, *, flusher: bool = True) -> Vfs:
        self.vfs = Vfs(self.remote, self.config())
        await self.vfs.start()  # replays what the journal holds
        if self.nursery is not None and flusher:
            await self.nursery.start(self._run_flusher)
        return self.vfs

    async def _run_flusher(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                async with trio.open_nursery() as nursery:
                    for host in self.vfs.hosts():
                        nursery.start_soon(host)
                    await self.vfs.flusher.run()
        finally:
            self._stopped.set()

    async def stop_flusher(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            assert self._stopped is not None
            await self._stopped.wait()
            self._scope = None

    async def close(self) -> None:
        await self.stop_flusher()
        await self.vfs.close()

    async def restart(self) -> Vfs:
        """The mount dies (nothing drained) and comes back on the same state dir."""
        had_flusher = self._scope is not None
        await self.close()
        self.generation += 1
        return await self.open(flusher=had_flusher)

    async def drain(self, timeout: float = 20.0) -> list[str]:
        """Send everything; the paths still pending. Returns once the bookkeeping of
        what landed is done too (`Vfs.drain` returns when the remote has it)."""
        left = await self.vfs.drain(timeout, own_loop=self._scope is None)
        await self.vfs.flusher.settled()
        return left


# ---------------------------------------------------------------------- path helpers


def split(path: str) -> tuple[str, str]:
    head, _, name = path.rpartition("/")
    return head, name


async def resolve(vfs: Vfs, path: str) -> Node:
    node = vfs.getattr(ROOT)
    for name in path.split("/") if path else ():
        node = await vfs.lookup(node.ino, name)
    return node


async def exists(vfs: Vfs, path: str) -> bool:
    try:
        await resolve(vfs, path)
    except FsError as e:
        if e.errno != errno.ENOENT:
            raise
        return False
    return True


async def open_path(vfs: Vfs, path: str, flags: int, mode: int = 0o644) -> tuple[int, Node]:
    """open(2): with O_CREAT, create the file if missing."""
    parent_path, name = split(path)
    parent = await resolve(vfs, parent_path)
    try:
        node = await vfs.lookup(parent.ino, name)
    except FsError as e:
        if e.errno != errno.ENOENT or not flags & os.O_CREAT:
            raise
        return await vfs.create(parent.ino, name, mode, flags)
    fh, _ = await vfs.open(node.ino, flags & ~(os.O_CREAT | os.O_EXCL))
    return fh, node


async def close(vfs: Vfs, fh: int) -> None:
    """close(2) of the last descriptor: flush, then release."""
    try:
        await vfs.flush(fh)
    finally:
        await vfs.release(fh)


async def read_all(vfs: Vfs, fh: int) -> bytes:
    out = bytearray()
    while True:
        chunk = await vfs.read(fh, len(out), 1 << 16)
        if not chunk:
            return bytes(out)
        out += chunk


async def write_file(vfs: Vfs, path: str, data: bytes, flags: int = WRITE_CREATE) -> Node:
    fh, node = await open_path(vfs, path, flags)
    try:
        off = vfs.getattr(node.ino).size if flags & os.O_APPEND else 0
        if data:
            await vfs.write(fh, off, data)
    finally:
        await close(vfs, fh)
    return node


async def append(vfs: Vfs, path: str, data: bytes) -> Node:
    return await write_file(vfs, path, data, os.O_WRONLY | os.O_APPEND)


async def read_file(vfs: Vfs, path: str) -> bytes:
    node = await resolve(vfs, path)
    fh, _ = await vfs.open(node.ino, os.O_RDONLY)
    try:
        return await read_all(vfs, fh)
    finally:
        await vfs.release(fh)


async def mkdirs(vfs: Vfs, path: str) -> Node:
    node = vfs.getattr(ROOT)
    for name in path.split("/") if path else ():
        try:
            node = await vfs.lookup(node.ino, name)
        except FsError as e:
            if e.errno != errno.ENOENT:
                raise
            node = await vfs.mkdir(node.ino, name, 0o755)
    return node


async def listdir(vfs: Vfs, path: str) -> list[str]:
    node = await resolve(vfs, path)
    fh = await vfs.opendir(node.ino)
    try:
        return [name for _, name, _, _ in vfs.readdir(fh, 0) if name not in (".", "..")]
    finally:
        vfs.releasedir(fh)


async def walk(vfs: Vfs) -> tuple[dict[str, bytes], set[str]]:
    """Everything the mount shows, as a user walking it sees it: files and their
    content (opened and read), and directories (opened and listed)."""
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    stack = [""]
    while stack:
        d = stack.pop()
        subdirs = 0
        for name in await listdir(vfs, d):
            p = f"{d}/{name}" if d else name
            node = await resolve(vfs, p)
            if node.kind == "dir":
                dirs.add(p)
                stack.append(p)
                subdirs += 1
            elif node.kind == "file":
                files[p] = await read_file(vfs, p)
        # A listed directory's link count: 2 plus one per subdirectory, as on ext4.
        assert (await resolve(vfs, d)).nlink == 2 + subdirs, f"nlink of {d or '/'}"
    return files, dirs


# The `make_mount` fixture's type: (remote=None, *, flusher=True, **VfsConfig options).
MakeMount = Callable[..., Awaitable[VfsMount]]


def blobs_hashed_from_disk(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every blob the flusher's digests read back from disk to hash it."""
    read: list[Path] = []
    real = digests.hash_file

    def recording(path: Path) -> tuple[int, str]:
        read.append(path)
        return real(path)

    monkeypatch.setattr(digests, "hash_file", recording)
    return read
