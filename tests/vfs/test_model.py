"""A model-based test of the vfs: random sequences of file operations, checked against a
plain dict model after every step, and against the remote after a drain.

No background task: each step is its own `trio.run`, and the flusher only runs when a
rule says so (`flush_round`, `fsync`, `sync_all`), so every example is deterministic.
REPOMOUNT_LONG_MODEL=1 runs 2000 examples instead of 60.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from repomount.remotes.base import Listing
from support.faultyremote import FaultyRemote
from support.memremote import MemRemote
from support.vfsutil import VfsMount, close, open_path, resolve, split, walk

T = TypeVar("T")
NAMES = ("a", "b", "c")
DIR_NAMES = ("d", "e")
LONG = os.environ.get("REPOMOUNT_LONG_MODEL") == "1"
STATS = {"examples": 0, "steps": 0}
OPEN_MODES = {
    "r": os.O_RDONLY,
    "w": os.O_WRONLY,
    "r+": os.O_RDWR,
    "a": os.O_WRONLY | os.O_APPEND,
    "a+": os.O_RDWR | os.O_APPEND,
    "w+": os.O_RDWR | os.O_TRUNC,
    "wt": os.O_WRONLY | os.O_TRUNC,
}


@dataclass(eq=False)
class MFile:
    data: bytearray


@dataclass
class MHandle:
    file: MFile
    readable: bool
    writable: bool
    append: bool
    ino: int


class VfsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="vfs-model-"))
        # Every other example lists one directory at a time (no recursive listing).
        self.remote = MemRemote(recursive_listing=STATS["examples"] % 2 == 0, upload_ahead=True)
        self.faulty = FaultyRemote(self.remote)
        held = {"flush_delay": 3600.0, "max_flush_window": 3600.0, "metadata_ttl": 3600.0}
        self.mount = VfsMount(self.faulty, self.tmp, held)  # no nursery: no flusher task
        self.files: dict[str, MFile] = {}
        self.dirs: set[str] = set()
        self.handles: dict[int, MHandle] = {}
        self.snapshots: dict[str, Listing] = {}
        self.touched = False  # anything changed locally since the last full sync
        self.ok = False
        self._run(self.mount.open)
        self._quick_retries()
        self.ok = True
        STATS["examples"] += 1

    def _quick_retries(self) -> None:
        """(A commit refused for content the remote dropped goes again at once.)"""
        self.vfs.flusher.config.backoff_base = self.vfs.flusher.config.backoff_max = 0.001

    # ------------------------------------------------------------------ plumbing

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        self.ok = False
        if getattr(self.mount, "vfs", None) is not None:
            # Each step is a trio.run of its own, with a clock of its own: the flusher
            # ties wall-clock retry times to trio's clock once per run.
            self.vfs.flusher._epoch = None
        out = trio.run(fn, *args)
        self.ok = True
        STATS["steps"] += 1
        return out

    @property
    def vfs(self) -> Any:
        return self.mount.vfs

    def _parents(self) -> list[str]:
        return ["", *sorted(d for d in self.dirs if "/" not in d)]

    def _free_paths(self) -> list[str]:
        return [
            f"{p}/{n}" if p else n
            for p in self._parents()
            for n in NAMES + DIR_NAMES
            if (f"{p}/{n}" if p else n) not in self.files
            and (f"{p}/{n}" if p else n) not in self.dirs
        ]

    def _under(self, d: str, p: str) -> bool:
        return p == d or p.startswith(d + "/")

    # ------------------------------------------------------------------ files

    @precondition(lambda self: self._free_paths() or self.files)
    @rule(data=st.data(), rw=st.booleans())
    def create(self, data: st.DataObject, rw: bool) -> None:
        path = data.draw(st.sampled_from(self._free_paths() + sorted(self.files)))
        flags = (os.O_RDWR if rw else os.O_WRONLY) | os.O_CREAT | os.O_TRUNC
        fh, node = self._run(open_path, self.vfs, path, flags)
        f = self.files.get(path) or MFile(bytearray())
        f.data[:] = b""
        self.files[path] = f
        self.handles[fh] = MHandle(f, rw, True, False, node.ino)
        self.touched = True

    @precondition(lambda self: self.files)
    @rule(data=st.data(), mode=st.sampled_from(sorted(OPEN_MODES)))
    def open(self, data: st.DataObject, mode: str) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)))
        flags = OPEN_MODES[mode]
        fh, node = self._run(open_path, self.vfs, path, flags)
        f = self.files[path]
        if flags & os.O_TRUNC:
            f.data[:] = b""
            self.touched = True
        acc = flags & os.O_ACCMODE
        self.handles[fh] = MHandle(
            f, acc != os.O_WRONLY, acc != os.O_RDONLY, bool(flags & os.O_APPEND), node.ino
        )

    def _handle(self, data: st.DataObject, *, writable: bool = False) -> int:
        fhs = sorted(fh for fh, h in self.handles.items() if h.writable or not writable)
        return data.draw(st.sampled_from(fhs))

    @precondition(lambda self: any(h.writable for h in self.handles.values()))
    @rule(data=st.data(), payload=st.binary(min_size=1, max_size=6))
    def write(self, data: st.DataObject, payload: bytes) -> None:
        fh = self._handle(data, writable=True)
        h = self.handles[fh]
        size = len(h.file.data)
        off = size if h.append else data.draw(st.integers(0, size + 3))
        assert self._run(self.vfs.write, fh, off, payload) == len(payload)
        h.file.data.extend(b"\0" * max(0, off - size))
        h.file.data[off : off + len(payload)] = payload
        self.touched = True

    @precondition(lambda self: any(h.readable for h in self.handles.values()))
    @rule(data=st.data(), size=st.integers(1, 12))
    def read(self, data: st.DataObject, size: int) -> None:
        fhs = sorted(fh for fh, h in self.handles.items() if h.readable)
        fh = data.draw(st.sampled_from(fhs))
        f = self.handles[fh].file
        off = data.draw(st.integers(0, len(f.data) + 2))
        assert self._run(self.vfs.read, fh, off, size) == bytes(f.data[off : off + size])

    @precondition(lambda self: self.files)
    @rule(data=st.data(), size=st.integers(0, 12))
    def truncate(self, data: st.DataObject, size: int) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)))

        async def go() -> None:
            node = await resolve(self.vfs, path)
            await self.vfs.setattr(node.ino, None, size=size)

        self._run(go)
        self._resize(self.files[path], size)

    @precondition(lambda self: any(h.writable for h in self.handles.values()))
    @rule(data=st.data(), size=st.integers(0, 12))
    def ftruncate(self, data: st.DataObject, size: int) -> None:
        fh = self._handle(data, writable=True)
        self._run(lambda: self.vfs.setattr(self.handles[fh].ino, fh, size=size))
        self._resize(self.handles[fh].file, size)

    def _resize(self, f: MFile, size: int) -> None:
        del f.data[size:]
        f.data.extend(b"\0" * (size - len(f.data)))
        self.touched = True

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        fh = self._handle(data)
        self._run(close, self.vfs, fh)
        del self.handles[fh]

    @precondition(lambda self: any(h.writable for h in self.handles.values()))
    @rule(data=st.data())
    def fsync(self, data: st.DataObject) -> None:
        """fsync waits for the flusher, which does not run here: flush, then a round."""
        fh = self._handle(data, writable=True)
        self._run(self.vfs.flush, fh)
        self._run(self.vfs.flusher.round)

    @rule()
    def flush_round(self) -> None:
        self._run(self.vfs.flusher.round)

    @rule()
    def upload_ahead(self) -> None:
        """The content journaled so far goes ahead of its commit, as in a burst."""
        self._run(self.vfs.flusher.ahead.upload_waiting)

    @rule()
    def remote_drops_content_uploaded_ahead(self) -> None:
        """The server collected content uploaded ahead before its commit came: the
        commit is refused, and sent again with its content."""
        self.remote.staged.clear()

    # ------------------------------------------------------------------ namespace

    @precondition(lambda self: self.files)
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)))
        parent, name = split(path)

        async def go() -> None:
            await self.vfs.unlink((await resolve(self.vfs, parent)).ino, name)

        self._run(go)
        del self.files[path]  # open handles keep the MFile
        self.touched = True

    @precondition(lambda self: self._free_paths())
    @rule(data=st.data())
    def mkdir(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(self._free_paths()))
        parent, name = split(path)

        async def go() -> None:
            await self.vfs.mkdir((await resolve(self.vfs, parent)).ino, name, 0o755)

        self._run(go)
        self.dirs.add(path)
        self.touched = True

    @precondition(lambda self: self.dirs)
    @rule(data=st.data())
    def rmdir(self, data: st.DataObject) -> None:
        empty = [
            d
            for d in sorted(self.dirs)
            if not any(p.startswith(d + "/") for p in [*self.files, *self.dirs])
        ]
        if not empty:
            return
        path = data.draw(st.sampled_from(empty))
        parent, name = split(path)

        async def go() -> None:
            await self.vfs.rmdir((await resolve(self.vfs, parent)).ino, name)

        self._run(go)
        self.dirs.discard(path)
        self.touched = True

    @precondition(lambda self: self.files or self.dirs)
    @rule(data=st.data(), over=st.booleans())
    def rename(self, data: st.DataObject, over: bool) -> None:
        src = data.draw(st.sampled_from(sorted([*self.files, *self.dirs])))
        if over and src in self.files and len(self.files) > 1:
            dst = data.draw(st.sampled_from(sorted(p for p in self.files if p != src)))
        else:
            free = [p for p in self._free_paths() if not self._under(src, p)]
            if not free:
                return
            dst = data.draw(st.sampled_from(free))
        (sp, sn), (dp, dn) = split(src), split(dst)

        async def go() -> None:
            a, b = await resolve(self.vfs, sp), await resolve(self.vfs, dp)
            await self.vfs.rename(a.ino, sn, b.ino, dn, 0)

        self._run(go)
        if src in self.files:
            self.files[dst] = self.files.pop(src)
        else:
            for table in (self.files, self.dirs):
                moved = [p for p in table if self._under(src, p)]
                for p in moved:
                    new = dst + p[len(src) :]
                    if isinstance(table, dict):
                        table[new] = table.pop(p)
                    else:
                        table.discard(p)
                        table.add(new)
        self.touched = True

    # ------------------------------------------------------------------ the world

    @precondition(lambda self: not self.handles)
    @rule()
    def crash_and_restart(self) -> None:
        """Every file is closed, so everything is journaled: nothing may be lost."""
        self._run(self.mount.restart)
        self._quick_retries()
        self.snapshots.clear()  # the new mount lists afresh

    @rule()
    def listing_lands(self) -> None:
        self._run(self.vfs.refresh_dirs, ["", *sorted(self.dirs)])
        self.snapshots.clear()  # a held answer can no longer land after a newer one

    @rule(data=st.data())
    def snapshot_listing(self, data: st.DataObject) -> None:
        """A listing request starts now; its answer is held (see stale_listing_lands)."""
        d = data.draw(st.sampled_from(["", *sorted(self.remote.dirs())]))
        self.snapshots[d] = self.remote.listing(d)

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data())
    def stale_listing_lands(self, data: st.DataObject) -> None:
        """A listing answered from an older state (a lagging replica, or a request that
        started before our own changes landed) changes nothing."""
        d = data.draw(st.sampled_from(sorted(self.snapshots)))
        slow = self.faulty.slow_listing(d, snapshot=self.snapshots.pop(d))
        slow.release()
        self._run(self.vfs.refresh_dirs, [d])
        self.faulty.disarm(slow)

    @precondition(lambda self: not self.handles)
    @rule()
    def sync_all(self) -> None:
        assert self._run(self.mount.drain) == []
        self._check_remote()
        self.touched = False

    @precondition(
        lambda self: not self.touched and not self.handles and (self._free_paths() or self.files)
    )
    @rule(data=st.data(), payload=st.binary(max_size=6), delete=st.booleans())
    def another_client(self, data: st.DataObject, payload: bytes, delete: bool) -> None:
        """While the mount is idle and in sync, another client writes or deletes a file;
        a listing of its directory makes that visible."""
        if delete and self.files:
            path = data.draw(st.sampled_from(sorted(self.files)))
            self.remote.remove(path)
            del self.files[path]
        else:
            path = data.draw(st.sampled_from(self._free_paths() + sorted(self.files)))
            self.remote.put(path, payload)
            self.files[path] = MFile(bytearray(payload))
        self._run(self.vfs.refresh_dirs, [split(path)[0]])
        self.snapshots.clear()  # (a listing of the parent landed)

    # ------------------------------------------------------------------ checks

    def _check_remote(self) -> None:
        assert self.remote.files() == {p: bytes(f.data) for p, f in self.files.items()}
        assert self.remote.dirs() == self.dirs

    @invariant()
    def shows_the_model(self) -> None:
        files, dirs = self._run(walk, self.vfs)
        assert files == {p: bytes(f.data) for p, f in self.files.items()}
        assert dirs == self.dirs
        for h in self.handles.values():
            assert self.vfs.getattr(h.ino).size == len(h.file.data)

    def teardown(self) -> None:
        try:
            if self.ok:  # (after a failure, only clean up)
                for fh in sorted(self.handles):
                    self._run(close, self.vfs, fh)
                self.handles.clear()
                assert self._run(self.mount.drain) == []
                self._check_remote()
        finally:
            trio.run(self.mount.close)
            shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.mark.timeout(3600 if LONG else 600)  # shrinking a failure takes a while
def test_vfs_matches_the_model() -> None:
    STATS.update(examples=0, steps=0)
    try:
        run_state_machine_as_test(
            VfsModel,
            settings=settings(
                derandomize=not LONG,
                max_examples=2000 if LONG else 60,
                stateful_step_count=50 if LONG else 30,
                deadline=None,
                print_blob=True,
                report_multiple_bugs=False,
            ),
        )
    finally:
        print(f"\nvfs model: {STATS['examples']} examples, {STATS['steps']} vfs steps")
