"""A server shared by a test module (each test gets its own repository) for speed, and
a store of the test's own for in-process tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from repomount.server.sqlite_store import SqliteStore
from support.server import ServerProc

_names = itertools.count()


@pytest.fixture
def client(live: ServerProc) -> Iterator[httpx.Client]:
    with live.client() as c:
        yield c


@pytest.fixture
def repo(live: ServerProc) -> str:
    name = f"r{next(_names)}"
    live.create_repo(name)
    return name


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A store with an empty repository "r"; every spool it made must be gone after."""
    s = SqliteStore(tmp_path / "data")
    s.create_repo("r")
    yield s
    s.close()
    assert list((tmp_path / "data" / "tmp").iterdir()) == []  # every spool consumed
