"""Fixtures of the in-process vfs tier: a Vfs over an in-memory remote, with its flusher
running in the background, closed at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from repomount.remotes.base import Remote
from support.faultyremote import FaultyRemote
from support.memremote import MemRemote
from support.vfsutil import MakeMount, VfsMount


@pytest.fixture
def mem(request: pytest.FixtureRequest) -> MemRemote:
    # Races around one directory's listing need directories listed one at a time
    # (else the first listing of the root brings the whole tree).
    per_dir = request.node.get_closest_marker("per_directory_listing") is not None
    return MemRemote(recursive_listing=not per_dir)


@pytest.fixture
def faulty(mem: MemRemote) -> FaultyRemote:
    return FaultyRemote(mem, seed=1234)


@pytest.fixture
async def make_mount(tmp_path: Path, mem: MemRemote) -> AsyncIterator[MakeMount]:
    """`await make_mount(remote=None, flusher=True, **VfsConfig options)` -> a started
    VfsMount (of `mem` by default); its flusher runs in the background until teardown
    closes the mount. `mount.restart()` restarts it from its journal."""
    mounts: list[VfsMount] = []
    async with trio.open_nursery() as nursery:

        async def make(
            remote: Remote | None = None, *, flusher: bool = True, **options: Any
        ) -> VfsMount:
            m = VfsMount(remote or mem, tmp_path / f"mount{len(mounts)}", options, nursery)
            mounts.append(m)
            await m.open(flusher=flusher)
            return m

        try:
            yield make
        finally:
            with trio.CancelScope(shield=True):
                for m in mounts:
                    await m.close()
            nursery.cancel_scope.cancel()


@pytest.fixture
async def mount(make_mount: MakeMount) -> VfsMount:
    """A mount of an empty in-memory repo, flusher running, flush_delay 0."""
    return await make_mount()
