"""Fixtures for tests on real FUSE mounts (tests/mount, tests/security): each conftest
imports them, so every mount is made and unmounted the same way."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from support.backends import BACKENDS, Backend
from support.mount import MountProc
from support.server import ServerProc

if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
    raise RuntimeError(
        "the mount tests need /dev/fuse and fusermount3: run scripts/setup (installs fuse3)"
    )

_repo_names = itertools.count()


def fresh_repo_name(stem: str = "repo") -> str:
    """A repo name no other test of this process uses (the mount tests share a server)."""
    return f"{stem}{next(_repo_names)}"


MountFactory = Callable[..., MountProc]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules of the shared suite say `pytestmark = pytest.mark.backends(...)`; the rest
    run on the native backend only."""
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        names = marker.args if marker else ("native",)
        metafunc.parametrize("backend", [BACKENDS[n] for n in names], ids=list(names))


@pytest.fixture
def mount_factory(server: ServerProc, tmp_path: Path, backend: Backend) -> Iterator[MountFactory]:
    """Mounts repos of `server` through `backend`; every mount is unmounted at
    teardown, even on failure."""
    mounts: list[MountProc] = []

    def make(
        repo: str | None = None, *, extra_args: Sequence[str] = (), create: bool = True
    ) -> MountProc:
        name = repo or fresh_repo_name()
        if create:
            server.create_repo(name)
        n = len(mounts)
        m = MountProc(
            backend.src(server, name),
            tmp_path / f"mnt{n}",
            work_dir=tmp_path / f"mount{n}",
            token=server.token,
            repo=name,
            extra_args=[*backend.extra_args(server), *extra_args],
            env=backend.env(server),
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
