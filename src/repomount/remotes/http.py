"""The one HTTP client every adapter shares: auth, timeouts, retries, error mapping.

Adapters describe a request (and whether it is safe to send twice); this module sends
it, retries transient failures with exponential backoff and full jitter (honouring
Retry-After), and turns any non-success answer into the typed errors of `base.py`.
The token lives only in the Authorization header: every message this module builds
passes through `redact`, and nothing here has a repr that shows it.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import AsyncIterable, AsyncIterator, Callable, Container, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import trio

from repomount.remotes.base import ProtocolError, RemoteError, Unavailable
from repomount.remotes.http_errors import (
    ErrorBody,
    ErrorParser,
    map_error,
    parse_error_body,
    parse_retry_after,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=10.0)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# A request body: bytes, or a factory giving a fresh async stream for each attempt
# (a stream can be consumed only once, and a retry must send the whole body again).
Body = bytes | Callable[[], AsyncIterable[bytes]]


# --------------------------------------------------------------------------- secrets


class Secret:
    """A credential that never shows itself in a repr or str."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


AuthScheme = Callable[[str], dict[str, str]]


def bearer_auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Never reached the server: safe to send again whatever the method.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Might have reached it: only safe for idempotent requests.
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


# --------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # total tries, the first included
    base_delay: float = 0.25  # seconds; the backoff ceiling doubles from here
    max_delay: float = 10.0
    max_retry_after: float = 60.0  # a longer Retry-After is left to the caller

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(max_delay, base * 2**retry)]."""
        ceiling = min(self.max_delay, self.base_delay * (2**retry))
        return (rng or random).uniform(0.0, ceiling)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


# --------------------------------------------------------------------------- the client


class HttpClient:
    """An httpx.AsyncClient with a base URL, auth, retries and typed errors.

    `name` labels messages ("native http://host:8750"). `auth` turns the token into
    headers (Bearer by default); `parse_error` reads the service's error body."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        name: str | None = None,
        auth: AuthScheme = bearer_auth,
        parse_error: ErrorParser = parse_error_body,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name or self.base_url
        self.retry = retry
        self._token = Secret(token) if token else None
        self._parse_error = parse_error
        all_headers = {"User-Agent": "repomount", **(headers or {})}
        if token:
            all_headers.update(auth(token))
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=all_headers,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url!r}, token={'***' if self._token else None})"

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def redact(self, text: str) -> str:
        if self._token is not None:
            text = text.replace(self._token.reveal(), "***")
        return text

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ requests

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: Body | None = None,
        idempotent: bool | None = None,
        ok: Container[int] = (),
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """Send a request and return its (fully read) response. A status outside 2xx
        and `ok` raises the mapped RemoteError. A body cut off in transit counts as a
        transient failure, so it is retried like one."""
        async with self._exchange(
            method, url, params, headers, json, content, idempotent, ok, timeout, preload=True
        ) as response:
            return response

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: Body | None = None,
        idempotent: bool | None = None,
        ok: Container[int] = (),
        timeout: httpx.Timeout | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Like `request`, but yields the response with its body unread, for streaming.
        Retries happen only before the response is yielded; a transport failure while
        the caller reads the body becomes Unavailable."""
        async with self._exchange(
            method, url, params, headers, json, content, idempotent, ok, timeout, preload=False
        ) as response:
            yield response

    @asynccontextmanager
    async def _exchange(
        self,
        method: str,
        url: str,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None,
        json: Any,
        content: Body | None,
        idempotent: bool | None,
        ok: Container[int],
        timeout: httpx.Timeout | None,
        *,
        preload: bool,
    ) -> AsyncIterator[httpx.Response]:
        method = method.upper()
        hdrs = dict(headers or {})
        if idempotent is None:
            idempotent = self._is_idempotent(method, hdrs)
        context = f"{self.name}: {method} {_path_only(url)}"
        retry = 0
        error: RemoteError
        while True:
            request = self._client.build_request(
                method,
                url,
                params=params,
                headers=hdrs,
                json=json,
                content=content() if callable(content) else content,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                error = self._transport_error(exc, context)
                if (isinstance(exc, _NOT_SENT) or idempotent) and isinstance(
                    exc, _NOT_SENT + _TRANSIENT
                ):
                    retry = await self._pause(retry, None, error)
                    if retry:
                        continue
                raise error from exc
            try:
                status = response.status_code
                if 200 <= status < 300 or status in ok:
                    if preload:
                        await response.aread()
                    try:
                        yield response
                    except httpx.TransportError as exc:
                        raise self._transport_error(exc, context) from exc
                    return
                await response.aread()
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                error = self.error_for(response, context=context, retry_after=retry_after)
            except httpx.TransportError as exc:  # the body was cut off
                error = self._transport_error(exc, context)
            finally:
                await response.aclose()
            if idempotent and isinstance(error, Unavailable):
                retry = await self._pause(retry, error.retry_after, error)
                if retry:
                    continue
            raise error

    def error_for(
        self, response: httpx.Response, *, context: str, retry_after: float | None = None
    ) -> RemoteError:
        """The typed error for a (read) non-success response, its message redacted."""
        body = self.error_body(response)
        return map_error(response.status_code, body, context=context, retry_after=retry_after)

    def error_body(self, response: httpx.Response) -> ErrorBody:
        """The service's error body as parsed by this client's parser, message redacted."""
        body = self._parse_error(response)
        message = self.redact(body.message) if body.message else None
        return ErrorBody(body.code, message, body.details)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _is_idempotent(method: str, headers: Mapping[str, str]) -> bool:
        names = {k.lower() for k in headers}
        if method in SAFE_METHODS or "idempotency-key" in names:
            return True
        # A conditional PUT cannot apply twice: a replay fails its precondition.
        return method == "PUT" and bool(names & {"if-match", "if-none-match"})

    def _transport_error(self, exc: httpx.TransportError, context: str) -> Unavailable:
        kind = type(exc).__name__
        detail = self.redact(str(exc)) or kind
        return Unavailable(f"{context}: {kind}: {detail}")

    async def _pause(self, retry: int, retry_after: float | None, error: RemoteError) -> int:
        """Sleep before the next attempt and return the new retry count, or 0 when the
        budget is spent (or the server asked for a longer wait than we will sit out)."""
        if retry + 1 >= self.retry.attempts:
            return 0
        if retry_after is not None and retry_after > self.retry.max_retry_after:
            return 0
        delay = self.retry.backoff(retry)
        if retry_after is not None:
            delay = max(delay, retry_after)
        log.info(
            "%s; retrying in %.2fs (%d/%d)",
            error.message,
            delay,
            retry + 1,
            self.retry.attempts - 1,
        )
        await trio.sleep(delay)
        return retry + 1


def _path_only(url: str) -> str:
    """The URL without its query string, which may hold signatures or secrets."""
    return url.split("?", 1)[0]


# --------------------------------------------------------------------------- adapters' helpers

T = TypeVar("T")
P = ParamSpec("P")

BODY_CHUNK = 256 * 1024


def file_chunks(source: Path) -> Callable[[], AsyncIterator[bytes]]:
    """A request body streamed from a file; a factory, so a retry re-sends it whole."""

    async def chunks() -> AsyncIterator[bytes]:
        async with await trio.open_file(source, "rb") as f:
            while chunk := await f.read(BODY_CHUNK):
                yield chunk

    return chunks


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object, or a ProtocolError saying which request broke it."""
    try:
        data = response.json()
    except ValueError as exc:
        raise ProtocolError(
            f"{response.request.method} {response.request.url.path}: not JSON",
            status=response.status_code,
        ) from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"{response.request.url.path}: expected a JSON object")
    return data


def parse_answer(build: Callable[[], T], service: str) -> T:
    """Run a parser of a service's JSON; a missing or mistyped field is a ProtocolError."""
    try:
        return build()
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"unexpected answer from {service}: {exc!r}") from exc


def parses(service: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a parser of `service`'s answers (a wire module's function) so that a
    missing or mistyped field raises ProtocolError, as `parse_answer` does."""

    def decorate(parse: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(parse)
        def parsed(*args: P.args, **kwargs: P.kwargs) -> T:
            return parse_answer(functools.partial(parse, *args, **kwargs), service)

        return parsed

    return decorate
