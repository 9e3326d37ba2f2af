from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from support.mount import MountProc
from support.server import ServerProc

if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
    raise RuntimeError(
        "the mount tests need /dev/fuse and fusermount3: run scripts/setup (installs fuse3)"
    )

_repo_names = itertools.count()

MountFactory = Callable[..., MountProc]


@pytest.fixture
def mount_factory(server: ServerProc, tmp_path: Path) -> Iterator[MountFactory]:
    """Mounts repos of `server`; every mount is unmounted at teardown, even on failure."""
    mounts: list[MountProc] = []

    def make(
        repo: str | None = None, *, extra_args: Sequence[str] = (), create: bool = True
    ) -> MountProc:
        name = repo or f"repo{next(_repo_names)}"
        if create:
            server.create_repo(name)
        n = len(mounts)
        m = MountProc(
            f"{server.url}/{name}",
            tmp_path / f"mnt{n}",
            work_dir=tmp_path / f"mount{n}",
            token=server.token,
            repo=name,
            extra_args=extra_args,
        )
        mounts.append(m)
        m.start()
        return m

    yield make
    for m in mounts:
        m.stop()


@pytest.fixture
def mnt(mount_factory: MountFactory) -> MountProc:
    return mount_factory()
