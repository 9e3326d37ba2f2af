"""Small requests to a plain-HTTP remote, on kept-alive connections, through h11 alone.

Why: a saved file's commit, a change-feed poll or a listing page is one small request,
and httpx spent most of its cost above the wire: measured on loopback, a small POST
took ~0.59 ms of CPU through HttpClient and httpx, ~0.11 ms through h11 on a kept-alive
socket. An fsync waits for that twice (request and answer) on top of the round trip.

`HttpClient` sends here what it reads whole anyway (not a stream), with a body of known
small size, to an `http://` base URL when no proxy is set in the environment (httpx
would use it); everything else goes through httpx. Retries, error mapping and the
deadline for an answer's head stay in HttpClient: failures here are raised as httpx's
exception types, so the same rules apply (`httpx.ConnectError`: never sent, safe to
send again; `httpx.RemoteProtocolError` / `ReadError` / `WriteError`: may have reached
the server). A body is held to the same timeouts as `limits.Guarded` holds a streamed
one, and to the caller's size cap.

A connection is reused only after a complete exchange both ways (h11's DONE/DONE); one
that failed, was cancelled, or was answered with `Connection: close` is closed. An idle
one is dropped after IDLE_EXPIRY (servers close theirs after ~5 s: Hypercorn's default)
or when it has become readable while idle (the server closed it, or sent something
unasked).
"""

from __future__ import annotations

import json as jsonlib
import math
import select
import urllib.request
from collections.abc import Container, Mapping
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import trio

from repomount.remotes.errors import ProtocolError
from repomount.remotes.limits import (
    MAX_ERROR_ANSWER,
    Stalled,
    Timeouts,
    answer_too_large,
    body_wait,
)

LANE_MAX_BODY = 64 * 1024  # a request body this large or smaller may take the lane
IDLE_EXPIRY = 4.0  # seconds an idle connection is kept
MAX_IDLE = 8  # idle connections kept (one per concurrent small request, at most)
READ_SIZE = 1 << 20  # bytes asked of the socket at a time (as remotes/http.SOCKET_READ)
MAX_HEAD = 100 * 1024  # bytes of an answer's head (httpcore's limit too)
# What a target may hold as it is: httpx would leave these alone. Anything else (a
# space, a quote, a fragment, `\`…) is left to httpx, which percent-encodes it its way.
_TARGET_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%"
)
_HEX = frozenset("0123456789abcdefABCDEF")
_SILENT = object()  # (a read that timed out)


class LaneResponse(httpx.Response):
    """A response read whole by the lane. Its `request` is built only when asked for
    (an error message): parsing the URL for every answer cost more than the rest."""

    def __init__(
        self, status: int, headers: list[tuple[bytes, bytes]], content: bytes, method: str, url: str
    ) -> None:
        # (Not `content=`: httpx would decode a compressed body whole, here, before any
        # cap. A compressed one is left unread, for HttpClient to decode in bounded
        # pieces or refuse: remotes/decoding.py.)
        super().__init__(status, headers=headers, stream=httpx.ByteStream(content))
        self._lane_request = (method, url)
        if "content-encoding" not in self.headers:
            self.read()

    @property
    def request(self) -> httpx.Request:
        if self._request is None:
            self._request = httpx.Request(*self._lane_request)
        return self._request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        """Whether an idle connection may carry the next request."""
        if now - self.idle_since > IDLE_EXPIRY:
            return False
        poll = select.poll()  # (not select(): a descriptor past 1023 is fine)
        try:  # readable while idle: closed by the server, or junk we did not ask for
            poll.register(self.stream.socket.fileno(), select.POLLIN)
            return not poll.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self.stream.socket.close()  # (synchronous: also right in a cancelled scope)


class FastLane:
    """Kept-alive connections to one plain-HTTP origin, and the small exchanges on them."""

    def __init__(
        self,
        scheme_host_port: tuple[str, int],
        base_path: str,
        host_header: str,
        headers: Mapping[str, str],
    ) -> None:
        self._host, self._port = scheme_host_port
        self._origin = f"http://{host_header}"
        self._base_path = base_path if base_path.endswith("/") else base_path + "/"
        self._headers = [("Host", host_header), ("Accept", "*/*"), *headers.items()]
        self._idle: list[_Connection] = []

    @classmethod
    def for_url(cls, base_url: str, headers: Mapping[str, str]) -> FastLane | None:
        """The lane to `base_url`, or None when it is not plain HTTP to a host we can
        name, or when the environment sets a proxy httpx would send it through."""
        try:
            parts = urlsplit(base_url)
            port = parts.port or 80
        except ValueError:
            return None
        proxies = urllib.request.getproxies_environment()
        if parts.scheme != "http" or not parts.hostname or "http" in proxies or "all" in proxies:
            return None
        if parts.username or parts.password or parts.query or parts.fragment:
            return None
        if not _plain(parts.path or "/") or not parts.netloc.isascii():
            return None
        host = parts.hostname
        host_header = parts.netloc if parts.port else host
        if ":" in host:  # (an IPv6 literal: the Host header keeps its brackets)
            host_header = f"[{host}]" + (f":{parts.port}" if parts.port else "")
        return cls((host, port), parts.path or "/", host_header, headers)

    def prepare(
        self,
        url: str,
        params: Mapping[str, str | int] | None,
        headers: dict[str, str],
        json: Any,
        content: bytes | None,
    ) -> tuple[str, bytes | None] | None:
        """The request target and body of a request that may take the lane, as httpx
        would send them (a JSON body's Content-Type added to `headers`); None when it
        should go through httpx."""
        if params is not None and "?" in url:
            return None  # (httpx rewrites the URL's query then, even for params={})
        body = content
        if json is not None:
            if content is not None:
                return None
            # (as httpx encodes it: compact, UTF-8, no NaN)
            text = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            body = text.encode()
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        if body is not None and len(body) > LANE_MAX_BODY:
            return None
        query = str(httpx.QueryParams(params)) if params else ""
        target = self.target(url, query)
        return None if target is None else (target, body)

    def target(self, url: str, query: str) -> str | None:
        """The request target for `url` (relative to the base URL, as httpx merges it)
        with `query` appended, or None when httpx should build it (an absolute URL, a
        character it would encode, a dot segment it would remove, a query twice)."""
        if "://" in url or url.startswith("//") or not _plain(url):
            return None
        if ":" in url.split("/", 1)[0]:
            return None  # (`a:b` is a URL of scheme `a` to httpx, sent as `/b`)
        path = self._base_path + url.lstrip("/")
        if "/./" in path or "/../" in path or path.endswith(("/.", "/..")):
            return None
        if query:
            if "?" in path:
                return None
            path = f"{path}?{query}"
        return path

    async def exchange(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        head_by: float,
        ok: Container[int],
        limits: Timeouts,
        max_body: int,
        context: str,
    ) -> httpx.Response:
        """Send one request and read its answer whole: its head by `head_by` (trio time)
        and with no silence longer than httpx's read timeout (else Stalled, as httpx's
        path says it), the body of a success (2xx or `ok`) up to `max_body` bytes, an
        error's up to MAX_ERROR_ANSWER (the rest cut off)."""
        began = trio.current_time()
        connection: _Connection | None = None
        head: h11.Response | None = None
        try:
            with trio.move_on_at(head_by):
                connection = self._idle_connection() or await self._connect(limits)
                head = await self._ask(connection, method, target, headers, body, limits, context)
            if connection is None or head is None:
                waited = trio.current_time() - began
                raise Stalled(f"{context}: no answer in {waited:.0f} s")
            success = 200 <= head.status_code < 300 or head.status_code in ok
            cap = max_body if success else MAX_ERROR_ANSWER
            content = await self._body(
                connection, limits, cap, truncate=not success, context=context
            )
        except BaseException:
            if connection is not None:
                connection.close()
            raise
        state = connection.h11
        # (Bytes after the answer, read with it, are no answer to anything we asked: a
        # connection holding some is never used again, or they would be the next one's.)
        if state.our_state is h11.DONE and state.their_state is h11.DONE and _drained(state):
            connection.h11.start_next_cycle()
            connection.idle_since = trio.current_time()
            self._idle.append(connection)
            if len(self._idle) > MAX_IDLE:
                self._idle.pop(0).close()
        else:
            connection.close()
        return LaneResponse(
            head.status_code, list(head.headers), content, method, self._origin + target
        )

    def aclose(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    # ------------------------------------------------------------------ internals

    def _idle_connection(self) -> _Connection | None:
        now = trio.current_time()
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the likeliest alive
            if connection.usable(now):
                return connection
            connection.close()
        return None

    async def _connect(self, limits: Timeouts) -> _Connection:
        with trio.move_on_after(limits.connect):
            try:
                return _Connection(await trio.open_tcp_stream(self._host, self._port))
            except OSError as exc:
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        raise httpx.ConnectTimeout(f"no connection in {limits.connect:g} s")

    async def _ask(
        self,
        connection: _Connection,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        limits: Timeouts,
        context: str,
    ) -> h11.Response:
        """Send the request; its answer's head."""
        state = connection.h11
        all_headers = self._headers_for(method, headers, body)
        try:
            data = state.send(h11.Request(method=method, target=target, headers=all_headers))
            if body:
                data += state.send(h11.Data(data=body))
            data += state.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:  # (a header value h11 will not send)
            # h11's message quotes the value, which may be the token: not passed on.
            why = "a header or the target holds a character HTTP/1.1 cannot carry"
            raise httpx.LocalProtocolError(why) from exc
        with trio.move_on_after(limits.read) as sending:
            try:
                await connection.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        if sending.cancelled_caught:
            why = f"the remote took none of the request for {limits.read:g} s"
            raise Stalled(f"{context}: {why}")
        silence = max(limits.answer, limits.read)  # (httpx's read timeout: limits.for_httpx)
        while True:
            event = await self._next_event(connection, silence)
            if event is _SILENT:
                raise Stalled(f"{context}: no answer in {silence:g} s")
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.InformationalResponse):
                continue  # (a 1xx before the answer)
            if isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__} before the answer")

    def _headers_for(
        self, method: str, headers: Mapping[str, str], body: bytes | None
    ) -> list[tuple[str, str]]:
        given = {name.lower() for name in headers}
        merged = [(k, v) for k, v in self._headers if k.lower() not in given]
        merged.extend(headers.items())
        if body or method in ("POST", "PUT", "PATCH"):
            merged.append(("Content-Length", str(len(body or b""))))
        return merged

    async def _next_event(self, connection: _Connection, silence: float = math.inf) -> object:
        """h11's next event, reading the socket as it needs; _SILENT when a read waited
        `silence` seconds for nothing."""
        state = connection.h11
        while True:
            try:
                event = state.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is not h11.NEED_DATA:
                return event
            with trio.move_on_after(silence):
                try:
                    data = await connection.stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
                state.receive_data(data)
                continue
            return _SILENT

    async def _body(
        self, connection: _Connection, limits: Timeouts, cap: int, *, truncate: bool, context: str
    ) -> bytes:
        parts: list[bytes] = []
        received, waited = 0, 0.0
        while True:
            budget = body_wait(limits, received, waited)
            started = trio.current_time()
            with trio.move_on_after(budget):
                event = await self._next_event(connection)
                waited += trio.current_time() - started
                if isinstance(event, h11.EndOfMessage):
                    return b"".join(parts)
                if not isinstance(event, h11.Data):
                    raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__}")
                received += len(event.data)
                if received > cap:
                    if not truncate:
                        raise ProtocolError(f"{context}: {answer_too_large(cap)}")
                    parts.append(bytes(event.data[: len(event.data) - (received - cap)]))
                    return b"".join(parts)  # (the connection is left unfinished: closed)
                parts.append(bytes(event.data))
                continue
            waited += trio.current_time() - started
            raise limits.stalled(budget, received, waited, context)


def _drained(state: h11.Connection) -> bool:
    """Whether nothing came after the answer (more bytes, or the connection's end)."""
    data, closed = state.trailing_data
    return not data and not closed


def _plain(text: str) -> bool:
    """Whether `text` is a URL path (and query) httpx would send as it is."""
    if not set(text) <= _TARGET_CHARS:
        return False
    pieces = text.split("%")
    return all(len(p) >= 2 and p[0] in _HEX and p[1] in _HEX for p in pieces[1:])
