"""What every adapter of an HTTP service shares, whatever its dialect.

An `HttpRemote` owns the `HttpClient`, names itself (`identity`), closes its connections,
checks `read()`'s arguments, and words the errors of `info()` (the first request a mount
makes, so its messages are the ones a user reads). A subclass supplies the requests and
the service's own wording; turning JSON into Entry/Listing/outcomes is each adapter's
wire module (native_wire.py, relace_wire.py, terminaluse_wire.py). `HostedSource` reads
the `SCHEME:ID` SRC strings of the hosted services.
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO, ClassVar, TypedDict
from urllib.parse import quote

import httpx

from repomount.remotes.base import (
    Aborted,
    Change,
    Failed,
    Fetched,
    NotFound,
    Outcome,
    Remote,
    RemoteError,
    RepoInfo,
    Unauthorized,
    Unavailable,
)
from repomount.remotes.http import DEFAULT_RETRY, HttpClient, RetryPolicy
from repomount.remotes.limits import DEFAULT_TIMEOUTS, Timeouts

CHUNK = 256 * 1024  # a piece of a body an adapter reads or sends in pieces

# Errors that say nothing about single changes (unreachable, refused key, no repo): the
# next change of a batch would fail the same way, so it is not sent.
WHOLE_REQUEST_ERRORS = (Unauthorized, Unavailable, NotFound)


async def apply_each(
    changes: Sequence[Change], apply_one: Callable[[Change], Awaitable[Outcome]]
) -> list[Outcome]:
    """The outcomes of sending `changes` one by one (a service with no batch). An error
    of the request as a whole (WHOLE_REQUEST_ERRORS) raises when nothing was sent yet;
    after that, the rest are not sent and fail as aborted."""
    outcomes: list[Outcome] = []
    for index, change in enumerate(changes):
        try:
            outcomes.append(await apply_one(change))
        except WHOLE_REQUEST_ERRORS as error:
            if not outcomes:
                raise  # nothing was applied: the request as a whole failed
            rest = len(changes) - index - 1
            outcomes.append(Failed(error))
            outcomes += [Failed(Aborted(f"not sent after: {error.message}"))] * rest
            break
        except RemoteError as error:
            outcomes.append(Failed(error))
    return outcomes


class HttpOptions(TypedDict, total=False):
    """How an adapter's HTTP client behaves, passed through its constructor."""

    retry: RetryPolicy
    timeouts: Timeouts  # how long the service may take (`repomount mount` options)
    transport: httpx.AsyncBaseTransport | None  # tests give a MockTransport


class HttpRemote(Remote):
    """One repo of an HTTP service at `base_url`; `repo` is its name or id there (for
    Terminal Use, a filesystem id).

    Subclasses set `scheme` (the identity's prefix), `label` (what the client's
    messages call the remote) and `root` (the URL of the repo's resources): formats of
    `base_url` and `repo`, quoted in `root`; and implement `_info`, `_fetch` and the
    wording of a failed `info()`."""

    scheme: ClassVar[str]
    label: ClassVar[str]
    root: ClassVar[str]
    # Whether info() says "cannot reach BASE_URL" in front of a transport failure.
    reword_unreachable: ClassVar[bool] = True

    def __init__(
        self,
        base_url: str,
        repo: str,
        *,
        token: str | None,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.repo = repo
        self._http = HttpClient(
            self.base_url,
            token=token,
            name=self.label.format(base_url=self.base_url, repo=repo),
            retry=retry,
            timeouts=timeouts,
            transport=transport,
        )
        self._root = self.root.format(base_url=self.base_url, repo=quote(repo, safe=""))

    @property
    def identity(self) -> str:
        return f"{self.scheme}:{self.base_url}/{self.repo}"

    async def aclose(self) -> None:
        await self._http.aclose()

    def version_of(self, sha256: str) -> str | None:
        return sha256  # every service here versions a file by the SHA-256 of its bytes

    def _path_url(self, collection: str, path: str) -> str:
        """The URL of repo path `path` in one of the repo's collections ("files")."""
        return f"{self._root}/{collection}/{quote(path, safe='/')}"

    # ------------------------------------------------------------------ info

    async def info(self) -> RepoInfo:
        try:
            return await self._info()
        except NotFound as exc:
            raise NotFound(self._info_not_found(), status=exc.status, code=exc.code) from exc
        except Unauthorized as exc:
            message = self._info_unauthorized(exc)
            raise Unauthorized(message, status=exc.status, code=exc.code) from exc
        except Unavailable as exc:
            if not self.reword_unreachable:
                raise
            raise Unavailable(
                f"cannot reach {self.base_url}: {exc.message}",
                status=exc.status,
                retry_after=exc.retry_after,
                code=exc.code,
            ) from exc

    @abc.abstractmethod
    async def _info(self) -> RepoInfo:
        """The repo's name and head, asked of the service (errors are worded by info)."""

    @abc.abstractmethod
    def _info_not_found(self) -> str:
        """What to tell the user when info() found no such repo."""

    @abc.abstractmethod
    def _info_unauthorized(self, exc: Unauthorized) -> str:
        """What to tell the user when info() was refused (with or without a token)."""

    # ------------------------------------------------------------------ reading

    async def read(
        self,
        path: str,
        dest: BinaryIO,
        *,
        version: str | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> Fetched:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        end = None if length is None else offset + length
        return await self._fetch(path, dest, version, offset, end)

    @abc.abstractmethod
    async def _fetch(
        self, path: str, dest: BinaryIO, version: str | None, start: int, end: int | None
    ) -> Fetched:
        """`read` with checked arguments: bytes [start, end) of the file (to its end
        when `end` is None) go to `dest`."""


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Copied:
    sha256: str  # of the whole body
    size: int  # the whole body's
    written: int  # how much of it went to the destination


async def copy_body(
    response: httpx.Response,
    dest: IO[bytes] | None,
    *,
    start: int = 0,
    end: int | None = None,
    hashed: bool = True,
) -> Copied:
    """Stream the body: hash all of it and write bytes [start, end) of it to `dest`
    (none with no `dest`). A service that has no ranged read still sends everything.
    Not `hashed` (a part of a file, which no version names): `sha256` is empty."""
    # Hashed here, not in a thread as it comes (sidehash.py): with the server on the
    # same two cores a thread found no idle core, and cost 20 % more CPU for no less
    # time (256 MiB: 0.36 s of CPU against 0.30, 0.49 s against 0.46 wall, median of 4).
    digest = hashlib.sha256()
    pos = written = 0
    async for chunk in response.aiter_bytes():  # as they come (up to http.SOCKET_READ)
        if hashed:
            digest.update(chunk)
        lo = max(start - pos, 0)
        hi = len(chunk) if end is None else min(end - pos, len(chunk))
        if dest is not None and lo < hi:
            dest.write(chunk[lo:hi])  # (a whole chunk's slice is the chunk: no copy)
            written += hi - lo
        pos += len(chunk)
    return Copied(digest.hexdigest() if hashed else "", pos, written)


# --------------------------------------------------------------------------- hosted services


@dataclass(frozen=True)
class HostedSource:
    """How a hosted service is named: SRC `SCHEME:ID`, its API's base URL (an argument,
    else $SCHEME_API_URL, else `default_url`) and its key's variable $SCHEME_API_KEY."""

    scheme: str  # "relace"
    id_name: str  # what the ID is called in messages: "repo id"
    id_pattern: re.Pattern[str]
    default_url: str
    id_example: str = ""  # said when an ID does not match: "a UUID such as ...; "

    @property
    def url_env(self) -> str:
        return f"{self.scheme.upper()}_API_URL"

    @property
    def key_env(self) -> str:
        return f"{self.scheme.upper()}_API_KEY"

    @property
    def accepted(self) -> str:
        """The SRC form, for messages: "relace:REPO_ID"."""
        return f"{self.scheme}:{self.id_name.upper().replace(' ', '_')}"

    def parse_id(self, src: str) -> str:
        """The ID of `src`, or a one-line ValueError (quoting `src` as given)."""
        scheme, colon, ident = src.strip().partition(":")
        if scheme.lower() != self.scheme or not colon:
            raise ValueError(f"bad remote {src!r}: expected {self.accepted}")
        if not ident:
            raise ValueError(f"bad remote {src!r}: no {self.id_name} after '{self.scheme}:'")
        if not self.id_pattern.fullmatch(ident):
            raise ValueError(
                f"bad remote {src!r}: a {self.id_name} is letters, digits, '.', '_' and '-' "
                f"({self.id_example}expected {self.accepted})"
            )
        return ident

    def url(self, endpoint: str | None) -> str:
        """The API's base URL as given (not yet checked)."""
        return endpoint or os.environ.get(self.url_env) or self.default_url
