"""The shared HTTP client's pure logic: retry decisions, backoff, error mapping, redaction.

A MockTransport stands in for the network here because these are decisions about
status codes and exceptions, not about a server; adapters are tested against the
real server in test_native.py.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from repomount.remotes.credentials import Secret
from repomount.remotes.errors import (
    Conflict,
    Gone,
    InvalidPath,
    NotFound,
    PreconditionRequired,
    ProtocolError,
    RemoteError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from repomount.remotes.http import BODY_CHUNK, BODY_READ, HttpClient, RetryPolicy
from repomount.remotes.http_errors import (
    ErrorBody,
    map_error,
    parse_error_body,
    parse_retry_after,
)
from repomount.remotes.limits import Stalled
from support.tap import Tap

TOKEN = "tok-s3cr3t-XYZ"
FAST = RetryPolicy(attempts=4, base_delay=0.1, max_delay=1.0)


def scripted(*script: httpx.Response | Exception) -> Tap:
    """A scripted server: answers (or raises) one item per request, then repeats the last;
    the tap in front of it records the requests (`sent`, their bodies read)."""
    answered = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal answered
        answered += 1
        item = script[min(answered, len(script)) - 1]
        if isinstance(item, Exception):
            raise item
        return item

    return Tap(httpx.MockTransport(answer))


def client(server: Tap, *, retry: RetryPolicy = FAST, **kw: object) -> HttpClient:
    return HttpClient(
        "http://remote.test",
        token=TOKEN,
        name="test",
        retry=retry,
        transport=server,
        **kw,  # type: ignore[arg-type]
    )


def err(status: int, code: str = "x", message: str = "m", **details: object) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, **details}})


# --------------------------------------------------------------------------- error bodies


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"error": {"code": "not_found", "message": "no repo"}}, "not_found", "no repo"),
        (
            {"error": {"type": "conflict", "title": "Workspace is behind"}},
            "conflict",
            "Workspace is behind",
        ),
        ({"error": "bad key"}, None, "bad key"),
        (
            {"detail": "The requested resource does not exist"},
            None,
            "The requested resource does not exist",
        ),
        (
            {"detail": [{"loc": ["body"], "msg": "field required"}]},
            "validation_error",
            "field required",
        ),
        ({"code": 409, "message": "stale"}, "409", "stale"),
    ],
)
def test_parse_error_body_shapes(body: object, code: str | None, message: str) -> None:
    parsed = parse_error_body(httpx.Response(400, json=body))
    assert (parsed.code, parsed.message) == (code, message)


def test_parse_error_body_not_json() -> None:
    assert parse_error_body(httpx.Response(502, text="<html>Bad gateway</html>")).message == (
        "<html>Bad gateway</html>"
    )
    assert parse_error_body(httpx.Response(500)) == ErrorBody()


# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ProtocolError),
        (401, Unauthorized),
        (403, Unauthorized),
        (404, NotFound),
        (408, Unavailable),
        (409, Conflict),
        (410, Gone),
        (412, Conflict),
        (413, TooLarge),
        (416, ProtocolError),
        (423, Unavailable),
        (428, PreconditionRequired),
        (429, Unavailable),
        (500, Unavailable),
        (503, Unavailable),
        (599, Unavailable),
    ],
)
def test_map_error_status(status: int, kind: type[RemoteError]) -> None:
    error = map_error(status, ErrorBody("c", "what"), context="GET /x")
    assert type(error) is kind
    assert error.status == status and error.code == "c"
    assert error.retryable == (kind is Unavailable)
    assert str(error) == f"GET /x: {status} what"


def test_map_error_details() -> None:
    conflict = map_error(
        412, ErrorBody("precondition_failed", "m", {"current_version": "ab"}), context="c"
    )
    assert isinstance(conflict, Conflict) and conflict.current == "ab"
    absent = map_error(
        412, ErrorBody("precondition_failed", "m", {"current_version": None}), context="c"
    )
    assert isinstance(absent, Conflict) and absent.current is None
    assert isinstance(map_error(422, ErrorBody("invalid_path"), context="c"), InvalidPath)
    assert type(map_error(422, ErrorBody("invalid_request"), context="c")) is ProtocolError
    busy = map_error(429, ErrorBody(), context="c", retry_after=3.0)
    assert isinstance(busy, Unavailable) and busy.retry_after == 3.0


def test_a_services_long_message_is_cut() -> None:
    """A JSON error's message had no bound: a megabyte of it went into every log line
    and status naming the error."""
    error = map_error(500, ErrorBody("boom", "x" * 1_000_000), context="POST /c")
    assert str(error) == "POST /c: 500 " + "x" * 500 + "…"


def test_parse_retry_after() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


def test_backoff_full_jitter_bounds() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    rng = random.Random(1)
    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (10, 3.0)]:
        samples = [policy.backoff(retry, rng) for _ in range(500)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.9 and min(samples) < ceiling * 0.1  # full jitter


# --------------------------------------------------------------------------- retries


async def test_get_retries_transient_failures_then_succeeds(autojump_clock: object) -> None:
    rec = scripted(
        err(503),
        httpx.Response(502),
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow connect"),
        httpx.RemoteProtocolError("Server disconnected without sending a response"),
        httpx.Response(200, json={"ok": 1}),
    )
    async with client(rec, retry=RetryPolicy(attempts=6, base_delay=0.1)) as c:
        response = await c.request("GET", "/v1/x")
    assert response.json() == {"ok": 1}
    assert len(rec.sent) == 6


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (httpx.ReadTimeout("slow"), "no answer in 60 s"),
        (httpx.WriteTimeout("slow"), "the remote took none of the request for 30 s"),
    ],
)
async def test_a_server_that_timed_out_is_not_asked_again_at_once(
    autojump_clock: object, exc: Exception, message: str
) -> None:
    """A stalled server would stall the retries too, multiplying the time a program
    waits (issue 17 #4): the caller goes offline instead, and tries again later."""
    rec = scripted(exc, httpx.Response(200))
    async with client(rec) as c:
        with pytest.raises(Stalled, match=f"test: GET /v1/x: {message}"):
            await c.request("GET", "/v1/x")
    assert len(rec.sent) == 1


async def test_retries_are_bounded(autojump_clock: object) -> None:
    rec = scripted(err(503, "busy", "try later"))
    start = trio.current_time()
    async with client(rec) as c:
        with pytest.raises(Unavailable, match="test: GET /v1/x: 503 try later") as info:
            await c.request("GET", "/v1/x")
    assert len(rec.sent) == FAST.attempts
    assert info.value.status == 503 and info.value.retryable
    # three sleeps, each at most min(max_delay, base * 2**n): 0.1 + 0.2 + 0.4
    assert trio.current_time() - start <= 0.7 + 1e-6


async def test_retry_after_is_honoured(autojump_clock: object) -> None:
    rec = scripted(
        httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, text="ok")
    )
    start = trio.current_time()
    async with client(rec) as c:
        await c.request("GET", "/v1/x")
    assert len(rec.sent) == 2
    assert trio.current_time() - start >= 7.0


async def test_long_retry_after_is_left_to_the_caller(autojump_clock: object) -> None:
    rec = scripted(httpx.Response(503, headers={"Retry-After": "600"}))
    async with client(rec) as c:
        with pytest.raises(Unavailable) as info:
            await c.request("GET", "/v1/x")
    assert len(rec.sent) == 1
    assert info.value.retry_after == 600.0


async def test_permanent_errors_are_not_retried(autojump_clock: object) -> None:
    rec = scripted(err(404, "not_found", "no such repo"))
    async with client(rec) as c:
        with pytest.raises(NotFound, match="no such repo") as info:
            await c.request("GET", "/v1/x")
    assert len(rec.sent) == 1
    assert info.value.code == "not_found" and not info.value.retryable


@pytest.mark.parametrize(
    ("method", "headers", "idempotent", "attempts"),
    [
        ("POST", {}, None, 1),  # may have been applied: never twice unasked
        ("POST", {}, True, 4),  # the caller knows (an idempotency key in the JSON body)
        ("POST", {"Idempotency-Key": "k"}, None, 4),
        ("PUT", {}, None, 1),
        ("PUT", {"If-Match": '"v1"'}, None, 4),
        ("PUT", {"If-None-Match": "*"}, None, 4),
        ("DELETE", {}, None, 1),
        ("GET", {}, False, 1),  # the caller can forbid it too
        ("HEAD", {}, None, 4),
    ],
)
async def test_only_requests_safe_to_repeat_are_retried(
    autojump_clock: object,
    method: str,
    headers: dict[str, str],
    idempotent: bool | None,
    attempts: int,
) -> None:
    rec = scripted(httpx.Response(503))
    async with client(rec) as c:
        with pytest.raises(Unavailable):
            await c.request(method, "/v1/x", headers=headers, idempotent=idempotent)
    assert len(rec.sent) == attempts


@pytest.mark.parametrize(
    ("exc", "attempts"),
    [
        (httpx.ConnectError("refused"), 4),  # never reached the server: safe for any method
        (httpx.ConnectTimeout("slow connect"), 4),
        (httpx.ReadTimeout("slow answer"), 1),  # may have been applied
        (httpx.RemoteProtocolError("dropped"), 1),
    ],
)
async def test_post_retries_only_what_never_left(
    autojump_clock: object, exc: Exception, attempts: int
) -> None:
    rec = scripted(exc)
    async with client(rec) as c:
        with pytest.raises(Unavailable, match=f"POST /v1/x: ({type(exc).__name__}|no answer)"):
            await c.request("POST", "/v1/x", json={})
    assert len(rec.sent) == attempts


async def test_streamed_body_is_sent_whole_on_every_attempt(autojump_clock: object) -> None:
    def body() -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for part in (b"abc", b"def"):
                yield part

        return gen()

    rec = scripted(httpx.Response(500), httpx.Response(201))
    async with client(rec) as c:
        response = await c.request("PUT", "/blob", content=body, idempotent=True)
    assert response.status_code == 201
    assert [r.content for r in rec.sent] == [b"abcdef", b"abcdef"]


async def test_ok_statuses_are_returned_not_raised() -> None:
    rec = scripted(err(409, "conflict", "c", conflicts=[]))
    async with client(rec) as c:
        response = await c.request("POST", "/v1/c", json={}, ok=(409,))
    assert response.status_code == 409


class _Broken(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"first part"
        raise httpx.ReadError("connection reset by peer")


async def test_body_cut_off_while_streaming_is_unavailable() -> None:
    rec = scripted(httpx.Response(200, stream=_Broken()))
    got = b""
    async with client(rec) as c:
        with pytest.raises(Unavailable, match="ReadError"):
            async with c.stream("GET", "/file") as response:
                async for chunk in response.aiter_bytes():
                    got += chunk
    assert got == b"first part"


async def test_request_retries_a_body_cut_off_in_transit(autojump_clock: object) -> None:
    rec = scripted(httpx.Response(200, stream=_Broken()), httpx.Response(200, json={"a": 1}))
    async with client(rec) as c:
        assert (await c.request("GET", "/v1/x")).json() == {"a": 1}
    assert len(rec.sent) == 2
    once = scripted(httpx.Response(200, stream=_Broken()))
    async with client(once) as c:
        with pytest.raises(Unavailable, match="ReadError"):
            await c.request("POST", "/v1/x", json={})
    assert len(once.sent) == 1


async def test_query_strings_stay_out_of_messages() -> None:
    rec = scripted(err(404))
    async with client(rec) as c:
        with pytest.raises(NotFound) as info:
            await c.request("GET", "/dl?sig=abcdef")
    assert "sig=" not in str(info.value) and "/dl" in str(info.value)


# --------------------------------------------------------------------------- auth and redaction


async def test_bearer_token_is_sent() -> None:
    rec = scripted(httpx.Response(200))
    async with client(rec) as c:
        await c.request("GET", "/v1/x")
    assert rec.sent[0].headers["Authorization"] == f"Bearer {TOKEN}"


async def test_auth_scheme_is_pluggable() -> None:
    rec = scripted(httpx.Response(200))
    async with client(rec, auth=lambda t: {"X-Api-Key": t}) as c:
        await c.request("GET", "/v1/x")
    assert rec.sent[0].headers["X-Api-Key"] == TOKEN
    assert "Authorization" not in rec.sent[0].headers


async def test_no_token_no_auth_header() -> None:
    rec = scripted(httpx.Response(200))
    async with HttpClient("http://r.test", transport=rec) as c:
        await c.request("GET", "/")
        assert not c.has_token
    assert "Authorization" not in rec.sent[0].headers


async def test_error_parser_is_pluggable() -> None:
    rec = scripted(httpx.Response(422, text="nope"))
    async with client(rec, parse_error=lambda r: ErrorBody("invalid_path", r.text)) as c:
        with pytest.raises(InvalidPath, match="nope"):
            await c.request("GET", "/v1/x")


async def test_token_never_shows(autojump_clock: object, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echoes = scripted(
        err(503, "busy", f"bad header Authorization: Bearer {TOKEN}"),
        err(401, "unauthorized", f"token {TOKEN} is not valid"),
    )
    errors: list[BaseException] = []
    async with client(echoes) as c:
        with pytest.raises(Unauthorized) as info:
            await c.request("GET", "/v1/x")
        errors.append(info.value)
        shown = [repr(c), str(c)]
    drops = scripted(httpx.ConnectError(f"proxy said {TOKEN}"))
    async with client(drops) as c:
        with pytest.raises(Unavailable) as info2:
            await c.request("GET", "/v1/x")
        errors.append(info2.value)
    for error in errors:
        shown += [str(error), repr(error), error.args[0]]
    shown += [record.getMessage() for record in caplog.records]
    assert caplog.records, "retries are logged"
    assert all(TOKEN not in text for text in shown), shown
    assert "***" in str(errors[0])
    assert repr(Secret(TOKEN)) == "Secret('***')" and TOKEN not in str(Secret(TOKEN))


async def test_a_streamed_body_goes_in_pieces_that_fit_one_write_timeout() -> None:
    """A body's chunk longer than BODY_CHUNK (a file read BODY_READ at a time) reaches
    the transport in pieces of at most BODY_CHUNK: httpcore writes each piece under one
    write timeout, which must be enough at --min-rate."""
    pieces: list[int] = []
    got = bytearray()

    class Reading(httpx.AsyncBaseTransport):  # (a MockTransport reads the body whole)
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            async for piece in request.stream:  # type: ignore[union-attr]
                pieces.append(len(piece))
                got.extend(piece)
            return httpx.Response(200, json={})

    data = random.Random(5).randbytes(BODY_READ + 10)

    async def body() -> AsyncIterator[bytes]:
        yield data[:BODY_READ]
        yield b""
        yield data[BODY_READ:]

    async with client(Tap(Reading())) as c:
        await c.request("POST", "/upload", content=body)
    assert bytes(got) == data
    assert pieces == [BODY_CHUNK] * (BODY_READ // BODY_CHUNK) + [10]
