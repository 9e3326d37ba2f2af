"""The remote contract: every adapter, against its face of one real `repomount serve`.

`FACES` names each adapter and how to open it on a repository of the reference server;
adding an adapter is one entry there, and every contract test then runs on it. What an
adapter does where it declares a capability is checked against the capability; where it
does not, against the behaviour its documentation (docs/remotes.md) promises.

The truth is always read back through the native API (`Store`): every face shares the
server's store, so what an adapter says it did must be what the store holds.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from repomount.remotes.base import (
    ApplyResult,
    Change,
    Expect,
    ExpectT,
    Failed,
    Remote,
    Unsupported,
    Write,
)
from repomount.remotes.http import RetryPolicy
from repomount.remotes.native import NativeRemote
from repomount.remotes.oxen import OxenRemote
from repomount.remotes.oxen_wire import xxh3_hex
from repomount.remotes.relace import RelaceRemote
from repomount.remotes.sentry import SentryRemote
from repomount.remotes.terminaluse import TerminalUseRemote
from support.server import ServerProc
from support.util import sha

FAST = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.5)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Opener(Protocol):
    def __call__(
        self,
        server: ServerProc,
        repo: str,
        *,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Remote: ...


@dataclass(frozen=True)
class Face:
    """One adapter and what its documentation promises beyond `Capabilities`."""

    name: str
    open: Opener  # the adapter for `repo` on `server`, through this face
    keys: bool  # a change sent again with the same idempotency key is replayed, not redone
    local_mkdir: bool = False  # without empty_dirs, Mkdir is accepted and sends nothing
    clean_read_conflict: bool = True  # a read at a moved version writes nothing to dest
    content_versions: bool = True  # a file's version is derived from its content (version_of)
    version: Callable[[bytes], str] = sha  # the version a file with this content has
    # Without conditional_write: a file replaced between the adapter's check and its
    # write is still noticed (the write names the file by an id a replace changes).
    sees_replace: bool = False

    def __str__(self) -> str:
        return self.name


def _native(
    server: ServerProc,
    repo: str,
    *,
    token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Remote:
    token = server.token if token is None else token
    return NativeRemote(server.url, repo, token=token, retry=FAST, transport=transport)


def _relace(
    server: ServerProc,
    repo: str,
    *,
    token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Remote:
    return RelaceRemote(
        repo,
        token=server.token if token is None else token,
        endpoint=f"{server.url}/relace/v1",
        retry=FAST,
        transport=transport,
    )


def _terminaluse(
    server: ServerProc,
    repo: str,
    *,
    token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Remote:
    return TerminalUseRemote(
        repo,
        base_url=f"{server.url}/terminaluse",
        token=server.token if token is None else token,
        retry=FAST,
        transport=transport,
    )


def _oxen(
    server: ServerProc,
    repo: str,
    *,
    token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Remote:
    """Every store repository is the Oxen repository `repomount/NAME`."""
    return OxenRemote(
        "repomount",
        repo,
        base_url=server.url,
        token=server.token if token is None else token,
        retry=FAST,
        transport=transport,
    )


def _sentry(
    server: ServerProc,
    repo: str,
    *,
    token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Remote:
    """Every store repository is a release (of every organization and project)."""
    return SentryRemote(
        "repomount",
        "p",
        repo,
        base_url=server.url,
        token=server.token if token is None else token,
        retry=FAST,
        transport=transport,
    )


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


FACES: dict[str, Face] = {
    "native": Face("native", _native, keys=True),
    "relace": Face("relace", _relace, keys=False, local_mkdir=True),
    "terminaluse": Face("terminaluse", _terminaluse, keys=True, clean_read_conflict=False),
    "oxen": Face("oxen", _oxen, keys=False, local_mkdir=True, version=xxh3_hex),
    "sentry": Face(
        "sentry", _sentry, keys=False, local_mkdir=True, version=sha1, sees_replace=True
    ),
}


# --------------------------------------------------------------------------- the store


class Store:
    """One fresh repository of the server, seen through the native API (the truth)."""

    def __init__(
        self, server: ServerProc, name: str, version: Callable[[bytes], str] = sha
    ) -> None:
        self.server = server
        self.name = name
        self.version = version  # the version the face under test gives this content

    def seed(self, files: dict[str, bytes]) -> None:
        """These files, written in one commit (not through the adapter under test)."""
        ops = [
            {"op": "write", "path": p, "content_b64": base64.b64encode(d).decode()}
            for p, d in files.items()
        ]
        with self.server.client() as client:
            url = f"/v1/repos/{self.name}/commits"
            client.post(url, json={"operations": ops}).raise_for_status()

    def put(self, path: str, data: bytes) -> str:
        """Someone else writes `path`; its new version, as the face under test says it."""
        self.server.put(self.name, path, data)
        return self.version(data)

    def files(self) -> dict[str, bytes]:
        return self.server.tree(self.name)

    def kinds(self) -> dict[str, str]:
        """Every path of the repository -> "file", "dir" or "symlink"."""
        with self.server.client() as client:
            params = {"recursive": "1", "limit": "5000"}
            body = client.get(f"/v1/repos/{self.name}/tree", params=params).json()
        assert body["next_cursor"] is None
        return {e["path"]: e["type"] for e in body["entries"]}

    def head(self) -> int:
        """The number of commits so far: a change that lands once moves it by one."""
        with self.server.client() as client:
            return int(client.get(f"/v1/repos/{self.name}").json()["head"])


# --------------------------------------------------------------------------- fixtures


_repo_names = itertools.count()


@pytest.fixture(scope="package")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server for the whole contract suite: every test makes its own repository."""
    proc = ServerProc(tmp_path_factory.mktemp("contract") / "data")
    try:
        proc.start()
        yield proc
    finally:
        try:
            proc.stop()
        finally:
            proc.kill()


@pytest.fixture(params=list(FACES.values()), ids=list(FACES))
def face(request: pytest.FixtureRequest) -> Face:
    """The adapter under test: every contract test runs once per entry of FACES."""
    chosen: Face = request.param
    return chosen


@pytest.fixture
def store(contract_server: ServerProc, face: Face) -> Store:
    name = f"c{next(_repo_names)}"
    contract_server.create_repo(name)
    return Store(contract_server, name, face.version)


@pytest.fixture
async def remote(face: Face, store: Store) -> AsyncIterator[Remote]:
    """The adapter of `face`, opened on `store`'s repository."""
    adapter = face.open(store.server, store.name)
    try:
        yield adapter
    finally:
        await adapter.aclose()


WriteFactory = Callable[..., Write]


@pytest.fixture
def write(tmp_path: Path) -> WriteFactory:
    """`write(path, data, expect=ABSENT, key="", mode=None)`: a Write whose content is
    in a spool file, as the vfs hands it over."""
    counter = itertools.count()

    def make(
        path: str,
        data: bytes,
        expect: ExpectT = Expect.ABSENT,
        key: str = "",
        mode: int | None = None,
    ) -> Write:
        spool = tmp_path / f"spool-{next(counter)}"
        spool.write_bytes(data)
        return Write(path, spool, len(data), sha(data), expect, key, mode)

    return make


# --------------------------------------------------------------------------- assertions


async def assert_refused(remote: Remote, store: Store, changes: Sequence[Change]) -> ApplyResult:
    """Every one of `changes` is refused with Unsupported (not retryable), and the
    repository is exactly as before: nothing was written, not even a commit."""
    files, kinds, head = store.files(), store.kinds(), store.head()
    result = await remote.apply(changes)
    assert len(result.outcomes) == len(changes)
    for outcome in result.outcomes:
        assert isinstance(outcome, Failed), outcome
        assert isinstance(outcome.error, Unsupported), outcome.error
        assert not outcome.retryable
    assert (store.files(), store.kinds(), store.head()) == (files, kinds, head)
    return result


def mutating(request: httpx.Request) -> bool:
    """A request that may change the remote (anything but GET, HEAD, OPTIONS)."""
    return request.method not in SAFE_METHODS
