"""Fixtures shared by every test directory: a real reference server on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from support.server import ServerFactory, ServerProc


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `wide_matrix` repeat, with another program or variant, what other
    tests already prove on every backend; by default they run on native alone, and
    REPOMOUNT_ALL_BACKENDS=1 runs them on every backend (the suite's full matrix)."""
    if os.environ.get("REPOMOUNT_ALL_BACKENDS") == "1":
        return
    keep, narrowed = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec is not None else None
        wide = item.get_closest_marker("wide_matrix") is not None
        if wide and backend is not None and backend.name != "native":
            narrowed.append(item)
        else:
            keep.append(item)
    if narrowed:
        config.hook.pytest_deselected(items=narrowed)
        items[:] = keep


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProc]:
    """A started server with a fresh data directory, stopped after the test."""
    proc = ServerProc(tmp_path / "server-data")
    try:
        proc.start()
        yield proc
    finally:
        _shutdown(proc)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server for a whole test module, for speed: its tests make their own repos."""
    proc = ServerProc(tmp_path_factory.mktemp("live") / "data")
    try:
        proc.start()
        yield proc
    finally:
        _shutdown(proc)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """`server_factory(extra_args=(...), token=...)` -> a started server; all stopped after."""
    procs: list[ServerProc] = []

    def make(extra_args: Sequence[str] = (), *, token: str = "test-token") -> ServerProc:
        proc = ServerProc(
            tmp_path / f"server-data-{len(procs)}", token=token, extra_args=extra_args
        )
        procs.append(proc)
        proc.start()
        return proc

    try:
        yield make
    finally:
        for proc in procs:
            _shutdown(proc)


def _shutdown(proc: ServerProc) -> None:
    try:
        proc.stop()
    finally:
        proc.kill()
