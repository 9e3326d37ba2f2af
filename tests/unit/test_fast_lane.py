"""The fast lane (remotes/fastlane.py): small requests HttpClient reads whole go out on
kept-alive plain-HTTP connections through h11, not httpx. What it must keep: the same
bytes on the wire as httpx would send (target, query, JSON body), one answer per request
however the connection is left (a cancelled request's late answer is never read as the
next one's), and httpx for everything it cannot do the same way."""

from __future__ import annotations

import gzip
import json
import os
import resource
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from repomount.remotes.errors import Conflict, ProtocolError, Unavailable
from repomount.remotes.fastlane import FastLane, LaneResponse
from repomount.remotes.http import NO_RETRY, HttpClient, RetryPolicy
from repomount.remotes.limits import Timeouts

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
TIMEOUTS = Timeouts(connect=2.0, answer=2.0, read=2.0, min_rate=64 << 10)


class Scripted:
    """A raw HTTP/1.1 server on 127.0.0.1: each request (head and Content-Length body)
    is recorded and answered by `answer(index, request)`, which returns the bytes to
    write back and whether to close the connection afterwards."""

    def __init__(self, answer: Callable[[int, bytes], Awaitable[tuple[bytes, bool]]]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                more = await stream.receive_some(65536)
                if not more:
                    return
                data += more
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            lengths = [int(h.split(b":")[1]) for h in lines if h.startswith(b"content-length")]
            length = lengths[0] if lengths else 0
            while len(rest) < length:
                rest += await stream.receive_some(65536)
            request, data = head + b"\r\n\r\n" + rest[:length], rest[length:]
            index = len(self.requests)
            self.requests.append(request)
            reply, close = await self.answer(index, request)
            await stream.send_all(reply)
            if close:
                await stream.aclose()
                return


def ok(body: bytes, *extra: str) -> bytes:
    headers = "".join(f"{h}\r\n" for h in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


@asynccontextmanager
async def scripted(
    answer: Callable[[int, bytes], Awaitable[tuple[bytes, bool]]],
) -> AsyncIterator[tuple[Scripted, HttpClient]]:
    server = Scripted(answer)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        client = HttpClient(f"http://127.0.0.1:{server.port}/api", token="secret-token", retry=FAST,
                            timeouts=TIMEOUTS)  # fmt: skip
        try:
            yield server, client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_small_requests_share_one_connection_and_each_gets_its_own_answer() -> None:
    async def answer(i: int, request: bytes) -> tuple[bytes, bool]:
        return ok(b'{"n": %d}' % i, "Content-Type: application/json"), False

    async with scripted(answer) as (server, client):
        for i in range(5):
            response = await client.request("POST", "/commits", json={"i": i})
            assert isinstance(response, LaneResponse)
            assert response.json() == {"n": i}
        assert server.connections == 1
        first = server.requests[0]
        assert first.startswith(b"POST /api/commits HTTP/1.1\r\n")
        assert b"\r\nAuthorization: Bearer secret-token\r\n" in first
        assert first.endswith(b'\r\n\r\n{"i":0}')
        assert response.request.url == f"http://127.0.0.1:{server.port}/api/commits"


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    """The server closes after each answer without saying so: the next request, a POST
    that may not be sent twice, goes on a new connection, never into the closed one."""

    async def answer(i: int, request: bytes) -> tuple[bytes, bool]:
        return ok(b"%d" % i), True

    async with scripted(answer) as (server, client):
        for i in range(3):
            await trio.sleep(0.05)  # (the close has arrived)
            response = await client.request("POST", "/x", content=b"once", idempotent=False)
            assert response.content == b"%d" % i
        assert server.connections == 3 and len(server.requests) == 3


async def test_connection_close_is_honoured() -> None:
    async def answer(i: int, request: bytes) -> tuple[bytes, bool]:
        return ok(b"a", "Connection: close"), False  # (the server keeps it open anyway)

    async with scripted(answer) as (server, client):
        await client.request("GET", "/a")
        await client.request("GET", "/a")
        assert server.connections == 2


async def test_a_cancelled_requests_late_answer_is_never_read_as_the_next_ones() -> None:
    slow = trio.Event()

    async def answer(i: int, request: bytes) -> tuple[bytes, bool]:
        if i == 0:
            await slow.wait()
        return ok(b"answer %d" % i), False

    async with scripted(answer) as (server, client):
        with trio.move_on_after(0.2):
            await client.request("GET", "/first")
        slow.set()
        response = await client.request("GET", "/second")
        assert response.content == b"answer 1"
        assert server.connections == 2


async def test_bytes_after_a_whole_answer_are_never_read_as_the_next_ones() -> None:
    """An answer sent twice, or one longer than it said, comes in one read with the
    bytes after it: the connection is not used again, whatever those bytes are."""

    async def answer(i: int, request: bytes) -> tuple[bytes, bool]:
        if i == 0:
            return ok(b"answer 0") + ok(b"unasked"), False
        return ok(b"answer %d" % i), False

    async with scripted(answer) as (server, client):
        assert (await client.request("GET", "/first")).content == b"answer 0"
        assert (await client.request("POST", "/x", content=b"x")).content == b"answer 1"
        assert server.connections == 2


async def test_a_compressed_answer_is_decoded_in_bounded_pieces_or_refused() -> None:
    """As through httpx (remotes/decoding.py): gzip decoded a piece at a time under the
    cap, an encoding not asked for refused. (httpx.Response(content=...) decoded the
    whole body at once: 256 MiB for this answer of 256 KiB.)"""
    bomb = gzip.compress(bytes(256 << 20), compresslevel=9)
    plain = b'{"a": 1}'

    async def answer(i: int, request: bytes) -> tuple[bytes, bool]:
        if request.startswith(b"GET /api/bomb"):
            return ok(bomb, "Content-Encoding: gzip"), False
        if request.startswith(b"GET /api/zstd"):
            return ok(b"\x28\xb5\x2f\xfd whatever", "Content-Encoding: zstd"), False
        return ok(gzip.compress(plain), "Content-Encoding: gzip"), False

    async with scripted(answer) as (_, client):
        assert (await client.request("GET", "/gzip")).content == plain
        tracemalloc.start()
        try:
            with pytest.raises(ProtocolError, match="larger than"):
                await client.request("GET", "/bomb", max_body=8 << 20)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 64 << 20
        with pytest.raises(ProtocolError, match="was not asked for"):
            await client.request("GET", "/zstd")


async def test_a_token_http_cannot_carry_stays_out_of_the_error() -> None:
    """A token read from a file with a CR at its end is refused as the client is made,
    in a message that does not quote it (tests/security/test_token_characters.py). A
    header value h11 refuses all the same (given here as another header) fails its
    request, sent nowhere; the lane's message does not quote it either (h11's does)."""

    async def answer(i: int, request: bytes) -> tuple[bytes, bool]:
        return ok(b"x"), False

    with pytest.raises(ValueError, match="cannot carry") as refused:
        HttpClient("http://127.0.0.1:9/api", token="secret-token\r")
    assert "secret" not in str(refused.value)
    async with scripted(answer) as (server, _):
        url = f"http://127.0.0.1:{server.port}/api"
        for lane in (True, False):
            bad = {"X-Extra": "secret-value\r"}
            client = HttpClient(url, headers=bad, retry=NO_RETRY, timeouts=TIMEOUTS)
            if not lane:
                client._lane = None
            with pytest.raises(Unavailable) as caught:
                await client.request("GET", "/x")
            await client.aclose()
            assert "LocalProtocolError" in str(caught.value)
            assert not lane or "secret" not in str(caught.value)
        assert server.requests == []


async def test_an_answer_that_stops_is_retried_when_idempotent_and_fails_once_when_not() -> None:
    async def answer(i: int, request: bytes) -> tuple[bytes, bool]:
        if i == 0:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True  # cut off
        return ok(b"whole"), False

    async with scripted(answer) as (server, client):
        response = await client.request("GET", "/g")
        assert response.content == b"whole" and len(server.requests) == 2
    async with scripted(answer) as (server, client):
        with pytest.raises(Unavailable):
            await client.request("POST", "/p", content=b"x", idempotent=False)
        assert len(server.requests) == 1


async def test_an_error_answer_is_the_typed_error_and_a_long_one_is_read_in_part() -> None:
    async def answer(i: int, request: bytes) -> tuple[bytes, bool]:
        body = json.dumps({"error": {"code": "conflict", "message": "m" * 200_000}}).encode()
        head = f"HTTP/1.1 409 Conflict\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        return head + body, False

    async with scripted(answer) as (_, client):
        with pytest.raises(Conflict) as caught:
            await client.request("POST", "/c", content=b"{}", idempotent=False)
        assert "409" in str(caught.value) and len(str(caught.value)) < 1000


async def test_what_the_lane_cannot_send_as_httpx_would_goes_through_httpx() -> None:
    async def answer(i: int, request: bytes) -> tuple[bytes, bool]:
        return ok(b"x"), False

    async with scripted(answer) as (server, client):
        plain = await client.request("GET", "/plain")
        spaced = await client.request("GET", "/a b")  # httpx percent-encodes the space
        big = await client.request("PUT", "/big", content=b"y" * (65 * 1024))
        assert isinstance(plain, LaneResponse)
        assert not isinstance(spaced, LaneResponse) and not isinstance(big, LaneResponse)
        assert server.requests[1].startswith(b"GET /api/a%20b HTTP/1.1")
    assert FastLane.for_url("https://example.com/x", {}) is None
    given = httpx.MockTransport(lambda r: httpx.Response(200))
    assert HttpClient("http://127.0.0.1:1", transport=given)._lane is None


def test_a_proxy_in_the_environment_keeps_requests_on_httpx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert FastLane.for_url("http://127.0.0.1:8750/r", {}) is not None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    assert FastLane.for_url("http://127.0.0.1:8750/r", {}) is None


# The lane's target and body are what httpx would send for the same call.
_segment = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=8
)
_params = st.dictionaries(st.sampled_from(["since", "wait", "cursor", "a b", "é"]),
                          st.one_of(st.integers(-5, 10**6), _segment), max_size=3)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(["http://h:1", "http://h:1/", "http://h:1/relace/v1", "http://h/x/"]),
    path=st.lists(
        st.one_of(_segment, st.sampled_from(["%2F", "%zz", ".", "..", "a%20b"])), max_size=4
    ).map("/".join),
    lead=st.booleans(),
    params=_params,
    body=st.one_of(
        st.none(),
        st.dictionaries(
            _segment,
            st.one_of(st.integers(), _segment, st.floats(allow_nan=False, allow_infinity=False)),
        ),
    ),
)
def test_the_lane_sends_what_httpx_would(
    base: str, path: str, lead: bool, params: dict[str, Any], body: dict[str, Any] | None
) -> None:
    url = ("/" if lead else "") + path
    lane = FastLane.for_url(base, {})
    assert lane is not None
    small = lane.prepare(url, params, {}, body, None)
    if small is None:
        return  # (httpx sends it)
    expected = httpx.Client(base_url=base).build_request("POST", url, params=params, json=body)
    assert small[0].encode() == expected.url.raw_path
    assert small[1] == (expected.content if body is not None else None)


def test_a_query_in_the_url_is_left_to_httpx_when_params_are_given_even_none() -> None:
    """httpx rebuilds the URL's query when given params, `{}` too: "a?" is sent "a",
    "?/" is sent "/" (hypothesis found these now and then: the test above was flaky)."""
    lane = FastLane.for_url("http://h:1/api", {})
    assert lane is not None
    for url in ("a?", "?/", "a?b"):
        assert lane.prepare(url, {}, {}, None, None) is None
        expected = httpx.Client(base_url="http://h:1/api").build_request("GET", url).url
        assert lane.prepare(url, None, {}, None, None) == (expected.raw_path.decode(), None)


def test_a_relative_url_with_a_colon_before_its_first_slash_is_left_to_httpx() -> None:
    """httpx reads `a:b` as a URL of scheme `a` and sends `/b` (hypothesis found `:`
    now and then, sent `/` by httpx, `/:` by the lane: the test above was flaky)."""
    lane = FastLane.for_url("http://h:1/api", {})
    assert lane is not None
    for url in (":", "a:b", ":a/b"):
        assert lane.prepare(url, None, {}, None, None) is None
    assert lane.prepare("/a:b", None, {}, None, None) == ("/api/a:b", None)
    assert lane.prepare("x/a:b", None, {}, None, None) == ("/api/x/a:b", None)


async def test_a_server_that_is_gone_is_unavailable_after_the_retries() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # (bound, never listening: connections are refused)
        client = HttpClient(f"http://127.0.0.1:{port}", retry=NO_RETRY, timeouts=TIMEOUTS)
        with pytest.raises(Unavailable, match="ConnectError"):
            await client.request("GET", "/x")
        await client.aclose()


async def test_connections_are_reused_when_descriptors_are_past_1023() -> None:
    """select() cannot look at a descriptor past 1023: every request then opened a new
    connection. (A mount holds many descriptors: spools, cache files.)"""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:

        async def answer(i: int, request: bytes) -> tuple[bytes, bool]:
            return ok(b"%d" % i), False

        async with scripted(answer) as (server, client):
            for i in range(3):
                assert (await client.request("GET", "/x")).content == b"%d" % i
            assert server.connections == 1
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
