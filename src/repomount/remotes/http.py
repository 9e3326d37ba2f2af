"""The one HTTP client every adapter shares: auth, timeouts, retries, error mapping.

Adapters describe a request (and whether it is safe to send twice); this module sends
it, retries transient failures with exponential backoff and full jitter (honouring
Retry-After), and turns any non-success answer into the typed errors of `errors.py`.
Every answer is held to the timeouts and size caps of `limits.py`.
The token lives only in the Authorization header: every message this module builds
passes through `redact`, and nothing here has a repr that shows it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterable, AsyncIterator, Callable, Container, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httpx
import trio

from repomount import h11body, onewrite
from repomount.remotes.credentials import AuthScheme, Secret, bearer_auth, check_token
from repomount.remotes.decoding import ACCEPT_ENCODING, decode_answer
from repomount.remotes.errors import RemoteError, Unavailable
from repomount.remotes.fastlane import IDLE_EXPIRY, FastLane, LaneResponse
from repomount.remotes.http_errors import (
    ErrorBody,
    ErrorParser,
    map_error,
    parse_error_body,
    parse_retry_after,
)
from repomount.remotes.limits import (
    DEFAULT_TIMEOUTS,
    MAX_ANSWER,
    MAX_ERROR_ANSWER,
    Guarded,
    Stalled,
    Timeouts,
    read_body,
)

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# httpcore reads a connection 64 KiB at a time, and each read is a round of Python in
# httpcore, h11, httpx and our own guard (limits.Guarded), each with a cancel scope: in a
# large download that per-read work, not the link, was the limit. With 1 MiB reads httpx
# alone streamed 256 MiB on loopback at 575 instead of 387 MiB/s. A read returns what has
# arrived, so small answers are unaffected. This sets a class attribute of httpcore's
# HTTP/1.1 connection, for every client in the process: a patch of its internals, checked
# by tests/unit/test_socket_reads.py. (A compressed answer is not decoded a read at a
# time by httpx, which would make a read of 1 MiB up to a GiB: decoding.py does it, in
# bounded pieces.)
SOCKET_READ = 1 << 20
if hasattr(httpcore.AsyncHTTP11Connection, "READ_NUM_BYTES"):
    httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = SOCKET_READ
h11body.install()  # (and h11 hands each read's bytes over without two more copies)
onewrite.install_client()  # (a request's head goes out in one write with a small body)

# A request body: bytes, or a factory giving a fresh async stream for each attempt
# (a stream can be consumed only once, and a retry must send the whole body again).
Body = bytes | Callable[[], AsyncIterable[bytes]]


# Never reached the server: safe to send again whatever the method.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Might have reached it: only safe for idempotent requests. (A server that timed out
# is not asked again at once: see limits.Stalled.)
_TRANSIENT = (httpx.NetworkError, httpx.RemoteProtocolError)


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
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name or self.base_url
        self.retry = retry
        self.timeouts = timeouts
        if token:
            check_token(token)
        self._token = Secret(token) if token else None
        self._parse_error = parse_error
        all_headers = {
            "User-Agent": "repomount",
            "Accept-Encoding": ACCEPT_ENCODING,  # (what decoding.py decodes, bounded)
            **(headers or {}),
        }
        if token:
            all_headers.update(auth(token))
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=all_headers,
            timeout=timeouts.for_httpx(),
            transport=transport,
            follow_redirects=False,
            # An idle connection is dropped before a server's usual 5 s (ours, Hypercorn's
            # default) would close it: with httpx's own 5 s, a request sent as the server
            # closed it failed, and waited out a retry's backoff.
            limits=httpx.Limits(
                max_connections=100, max_keepalive_connections=20, keepalive_expiry=IDLE_EXPIRY
            ),  # (httpx's defaults, but for the expiry)
        )
        # Small requests read whole skip httpx where they can (fastlane.py says why);
        # a transport given (a test's) carries everything.
        self._lane = FastLane.for_url(self.base_url, all_headers) if transport is None else None

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url!r}, token={'***' if self._token else None})"

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def redact(self, text: str) -> str:
        if self._token is not None:
            token = self._token.reveal()
            # (also as a repr shows it: h11 quotes a header value it refuses, escaped)
            escaped = repr(token.encode(errors="backslashreplace"))[2:-1]
            for form in (token, repr(token)[1:-1], escaped):
                text = text.replace(form, "***")
        return text

    async def aclose(self) -> None:
        if self._lane is not None:
            self._lane.aclose()
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
        timeouts: Timeouts | None = None,
        max_body: int = MAX_ANSWER,
    ) -> httpx.Response:
        """Send a request and return its (fully read) response. A status outside 2xx
        and `ok` raises the mapped RemoteError. A body cut off in transit counts as a
        transient failure, so it is retried like one; a body over `max_body` bytes is a
        ProtocolError."""
        async with self._exchange(
            method, url, params, headers, json, content, idempotent, ok, timeouts, max_body
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
        timeouts: Timeouts | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Like `request`, but yields the response with its body unread, for streaming
        (held to the timeouts as it arrives, with no size cap). Retries happen only
        before the response is yielded; a transport failure while the caller reads the
        body becomes Unavailable."""
        async with self._exchange(
            method, url, params, headers, json, content, idempotent, ok, timeouts, None
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
        timeouts: Timeouts | None,
        max_body: int | None,  # read the body (at most this much) before yielding
    ) -> AsyncIterator[httpx.Response]:
        method = method.upper()
        hdrs = dict(headers or {})
        if idempotent is None:
            idempotent = self._is_idempotent(method, hdrs)
        limits = timeouts if timeouts is not None else self.timeouts
        context = f"{self.name}: {method} {_path_only(url)}"
        small = None
        if self._lane is not None and max_body is not None and not callable(content):
            small = self._lane.prepare(url, params, hdrs, json, content)
        retry = 0
        error: RemoteError
        while True:
            if small is not None:
                response = await self._send_small(
                    method, small, hdrs, idempotent, ok, limits, max_body, context, retry
                )
            else:
                response = await self._send(
                    method, url, params, hdrs, json, content, idempotent, limits, context, retry
                )
            if isinstance(response, int):
                retry = response
                continue
            if isinstance(response, LaneResponse) and "content-encoding" not in response.headers:
                status = response.status_code  # (read whole, within its caps)
                if 200 <= status < 300 or status in ok:
                    yield response
                    return
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                error = self.error_for(response, context=context, retry_after=retry_after)
            else:
                assert isinstance(response.stream, httpx.AsyncByteStream)  # (an async client's)
                response.stream = Guarded(response.stream, limits, context)
                try:
                    decode_answer(response, context)
                    status = response.status_code
                    if 200 <= status < 300 or status in ok:
                        read = response  # (streamed) or a copy with its body read:
                        if max_body is not None:
                            read = await read_body(response, max_body, context)
                        try:
                            yield read
                        except httpx.TransportError as exc:
                            raise self._transport_error(exc, context) from exc
                        return
                    body = await read_body(response, MAX_ERROR_ANSWER, context, truncate=True)
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    error = self.error_for(body, context=context, retry_after=retry_after)
                except httpx.TransportError as exc:  # the body was cut off
                    error = self._transport_error(exc, context)
                finally:
                    await response.aclose()
            if idempotent and isinstance(error, Unavailable) and not isinstance(error, Stalled):
                retry = await self._pause(retry, error.retry_after, error)
                if retry:
                    continue
            raise error

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str | int] | None,
        headers: dict[str, str],
        json: Any,
        content: Body | None,
        idempotent: bool,
        limits: Timeouts,
        context: str,
        retry: int,
    ) -> httpx.Response | int:
        """One attempt: the response with its headers (body unread), or the new retry
        count when the attempt failed in a way worth repeating (after the pause)."""
        began = trio.current_time()
        # The answer's headers are due `answer` seconds after the request is sent; a
        # streamed body moves that deadline as it goes (limits.Timeouts.send_deadline).
        deadline = trio.CancelScope(deadline=limits.send_deadline(began, 0))
        body = content() if callable(content) else content
        if body is not None and not isinstance(body, bytes):
            body = _extending(body, deadline, limits.min_rate)
        request = self._client.build_request(
            method,
            url,
            params=params,
            headers=headers,
            json=json,
            content=body,
            timeout=limits.for_httpx(),
        )
        if body is None or isinstance(body, bytes):
            sent = int(request.headers.get("Content-Length") or 0)
            deadline.deadline = limits.send_deadline(began, sent)
        try:
            with deadline:
                return await self._client.send(request, stream=True)
        except httpx.ReadTimeout as exc:  # (httpx's read timeout: see for_httpx)
            waited = max(limits.answer, limits.read)
            raise Stalled(f"{context}: no answer in {waited:g} s") from exc
        except httpx.WriteTimeout as exc:
            why = f"the remote took none of the request for {limits.read:g} s"
            raise Stalled(f"{context}: {why}") from exc
        except httpx.TransportError as exc:
            return await self._failed(exc, context, idempotent, retry)
        # (the deadline passed: headers trickled, or a request body sent too slowly)
        raise Stalled(f"{context}: no answer in {trio.current_time() - began:.0f} s")

    async def _send_small(
        self,
        method: str,
        small: tuple[str, bytes | None],
        headers: dict[str, str],
        idempotent: bool,
        ok: Container[int],
        limits: Timeouts,
        max_body: int | None,
        context: str,
        retry: int,
    ) -> httpx.Response | int:
        """`_send` through the fast lane, the answer read whole (success up to
        `max_body` bytes, an error's message up to MAX_ERROR_ANSWER)."""
        assert self._lane is not None and max_body is not None
        target, body = small
        began = trio.current_time()
        head_by = limits.send_deadline(began, len(body or b""))
        try:
            return await self._lane.exchange(
                method, target, headers, body, head_by=head_by, ok=ok, limits=limits,
                max_body=max_body, context=context,
            )  # fmt: skip
        except httpx.TransportError as exc:
            return await self._failed(exc, context, idempotent, retry)

    async def _failed(
        self, exc: httpx.TransportError, context: str, idempotent: bool, retry: int
    ) -> int:
        """After a failed attempt: the new retry count when it is worth repeating (after
        the pause), else the mapped error is raised."""
        error = self._transport_error(exc, context)
        if (isinstance(exc, _NOT_SENT) or idempotent) and isinstance(exc, _NOT_SENT + _TRANSIENT):
            retry = await self._pause(retry, None, error)
            if retry:
                return retry
        raise error from exc

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
        stalled = isinstance(exc, httpx.TimeoutException) and not isinstance(exc, _NOT_SENT)
        return (Stalled if stalled else Unavailable)(f"{context}: {kind}: {detail}")

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


async def _extending(
    body: AsyncIterable[bytes], deadline: trio.CancelScope, rate: float
) -> AsyncIterator[bytes]:
    """A streamed request body that gives its sender `len(piece) / rate` more seconds
    for every piece it hands over; a chunk longer than BODY_CHUNK goes in pieces of that
    size (httpcore writes each piece under one write timeout), views of it rather than
    copies (h11 takes any bytes-like piece)."""
    async for chunk in body:
        if not chunk:
            continue  # (an empty piece: nothing to send)
        if len(chunk) <= BODY_CHUNK:
            deadline.deadline += len(chunk) / rate
            yield chunk
            continue
        view = memoryview(chunk)
        for start in range(0, len(chunk), BODY_CHUNK):
            piece = view[start : start + BODY_CHUNK]
            deadline.deadline += len(piece) / rate
            yield piece  # type: ignore[misc]  # (a view: bytes-like, as h11 needs)


# --------------------------------------------------------------------------- adapters' helpers

# A piece of a body being sent. httpcore writes each piece under one write timeout
# (--read-timeout), so a piece must be small enough to go at --min-rate within it:
# 256 KiB takes 8 s at 32 KiB/s. (1 MiB pieces would need 34 KiB/s with the defaults.)
# A longer chunk of a streamed body is sent in such pieces (`_extending`).
BODY_CHUNK = 256 * 1024
# A file sent as a request body is read this much at a time, each read a worker-thread
# hop: a 256 MiB upload then costs 256 hops, not 1,024 (client CPU 0.17 s, not 0.32 s).
BODY_READ = 1 << 20


def file_chunks(source: Path) -> Callable[[], AsyncIterator[bytes]]:
    """A request body streamed from a file; a factory, so a retry re-sends it whole."""

    async def chunks() -> AsyncIterator[bytes]:
        async with await trio.open_file(source, "rb") as f:
            while chunk := await f.read(BODY_READ):
                yield chunk

    return chunks
