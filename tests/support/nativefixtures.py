"""The native adapter's tests' fixtures (tests/remotes/test_native.py and
test_native_apply.py, through tests/remotes/conftest.py): a repo on a fresh reference
server, a NativeRemote on it, and Write changes as the vfs hands them over."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from repomount.remotes.base import Expect, ExpectT, Write
from repomount.remotes.http import RetryPolicy
from repomount.remotes.native import NativeRemote
from support.server import ServerProc
from support.util import sha

REPO = "proj"
FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.5)


@pytest.fixture
def repo(server: ServerProc) -> ServerProc:
    server.create_repo(REPO)
    return server


@pytest.fixture
async def remote(repo: ServerProc) -> AsyncIterator[NativeRemote]:
    remote = NativeRemote(repo.url, REPO, token=repo.token, retry=FAST)
    yield remote
    await remote.aclose()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Write]:
    """Write(path, data) with its content in a spool file, as the vfs hands it over."""
    counter = iter(range(1_000_000))

    def make(path: str, data: bytes, expect: ExpectT = Expect.ABSENT, key: str = "") -> Write:
        spool = tmp_path / f"spool-{next(counter)}"
        spool.write_bytes(data)
        return Write(path, spool, len(data), sha(data), expect, key)

    return make


def head_of(server: ServerProc) -> str:
    with server.client() as client:
        return str(client.get(f"{server.url}/v1/repos/{REPO}").json()["head"])
