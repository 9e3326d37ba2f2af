"""A server shared by a test module (each test gets its own repository) for speed."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

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
