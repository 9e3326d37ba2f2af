"""A message's head goes out in one write with its body (onewrite.py): requests from
httpcore, answers from Hypercorn. Each side's writes are counted at the socket, and
what the other side receives is checked whole."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from repomount import onewrite

assert onewrite.install_client() and onewrite.install_server()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[int]]:
    """The sizes of the writes made on each socket stream, by the stream's id."""
    made: dict[int, list[int]] = {}
    original = trio.SocketStream.send_all

    async def counted(self: trio.SocketStream, data: bytes | bytearray | memoryview) -> None:
        made.setdefault(id(self), []).append(len(data))
        await original(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", counted)
    return made


# ---------------------------------------------------------------------- requests


async def _read_request(stream: trio.SocketStream) -> bytes:
    """A whole request (a Content-Length body, or a chunked one) as received."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive_some(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(h.split(b":")[1]) for h in lines if h.startswith(b"content-length")), 0)
    chunked = any(h.startswith(b"transfer-encoding") for h in lines)
    while (not body.endswith(b"0\r\n\r\n")) if chunked else len(body) < length:
        body += await stream.receive_some(65536)
    return head + b"\r\n\r\n" + body


async def _client_case(send: object, headers_seen: trio.Event | None = None) -> bytes:
    """Serve one request on a listener of our own (which writes with the socket's own
    send: only the client's writes are counted); the bytes it got."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    got: list[bytes] = []

    async def handle(stream: trio.SocketStream) -> None:
        if headers_seen is not None:  # (the head arrives before the body is made)
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
            headers_seen.set()
            rest = await _read_request(_Prefixed(stream, data))
            got.append(rest)
        else:
            got.append(await _read_request(stream))
        await stream.socket.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await send(client)  # type: ignore[operator]
            assert response.status_code == 200 and response.content == b"ok"
        nursery.cancel_scope.cancel()
    return got[0]


class _Prefixed:
    """A stream whose first bytes were read already."""

    def __init__(self, stream: trio.SocketStream, first: bytes) -> None:
        self._stream, self._first = stream, first

    async def receive_some(self, n: int) -> bytes:
        if self._first:
            first, self._first = self._first, b""
            return first
        return await self._stream.receive_some(n)


async def test_a_small_request_is_one_write(writes: dict[int, list[int]]) -> None:
    body = {"operations": [{"op": "write", "path": "f", "content": "x" * 1024}]}
    got = await _client_case(lambda c: c.post("/commits", json=body))
    assert [len(sizes) for sizes in writes.values()] == [1]
    head, _, sent = got.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /commits HTTP/1.1") and json.loads(sent) == body


async def test_a_request_without_a_body_is_one_write(writes: dict[int, list[int]]) -> None:
    got = await _client_case(lambda c: c.get("/changes", params={"since": "3"}))
    assert [len(sizes) for sizes in writes.values()] == [1]
    assert got.startswith(b"GET /changes?since=3 HTTP/1.1") and got.endswith(b"\r\n\r\n")


async def test_a_large_body_goes_after_its_head_uncopied(writes: dict[int, list[int]]) -> None:
    body = bytes(range(256)) * 1024  # 256 KiB
    got = await _client_case(lambda c: c.put("/blobs/x", content=body))
    (sizes,) = writes.values()
    assert len(sizes) == 2 and sizes[1] == len(body)  # the head, then the body as it was
    assert got.partition(b"\r\n\r\n")[2] == body


async def test_a_streamed_body_does_not_hold_its_head() -> None:
    """A body sent as it is made (a staged upload, without a length): the server sees
    the request before the body's first piece exists."""
    seen = trio.Event()

    async def pieces() -> AsyncIterator[bytes]:
        with trio.fail_after(10):
            await seen.wait()  # (would wait forever if the head were held for it)
        yield b"late"

    got = await _client_case(lambda c: c.post("/blobs", content=pieces()), headers_seen=seen)
    assert b"transfer-encoding: chunked" in got.lower()
    assert got.endswith(b"4\r\nlate\r\n0\r\n\r\n")


# ---------------------------------------------------------------------- answers


async def _json(request: Request) -> Response:
    return JSONResponse({"head": "7", "outcomes": [{"status": "applied"}]})


async def _streamed(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part

    return StreamingResponse(parts())


async def _served(raw_requests: list[bytes]) -> list[bytes]:
    """Send raw requests to a Hypercorn server, one connection each (with the socket's
    own send: only the server's writes are counted); what came back."""
    app = Starlette(
        routes=[Route("/json", _json, methods=["GET", "HEAD"]), Route("/stream", _streamed)]
    )
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    answers: list[bytes] = []
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(serve, app, config)
        port = int(urls[0].rsplit(":", 1)[1])
        for raw in raw_requests:
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", port))
            await sock.send(raw)
            data = b""
            while True:
                with trio.move_on_after(0.5):
                    piece = await sock.recv(65536)
                    if piece:
                        data += piece
                        continue
                break
            answers.append(data)
            sock.close()
        nursery.cancel_scope.cancel()
    return answers


async def test_an_answer_is_one_write(writes: dict[int, list[int]]) -> None:
    (answer,) = await _served([b"GET /json HTTP/1.1\r\nhost: x\r\n\r\n"])
    assert [len(sizes) for sizes in writes.values()] == [1]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["head"] == "7"


async def test_a_head_answer_is_one_write(writes: dict[int, list[int]]) -> None:
    (answer,) = await _served([b"HEAD /json HTTP/1.1\r\nhost: x\r\n\r\n"])
    assert [len(sizes) for sizes in writes.values()] == [1]
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n")


async def test_a_streamed_answer_arrives_whole(writes: dict[int, list[int]]) -> None:
    (answer,) = await _served([b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n"])
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert body == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"
    (sizes,) = writes.values()
    assert sizes[0] > len(head)  # (the head went with the first part)


async def test_an_error_answer_is_whole(writes: dict[int, list[int]]) -> None:
    """Hypercorn's own answer to a request it cannot parse (a head, then its end)."""
    (answer,) = await _served([b"NOT HTTP\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 400")
    assert [len(sizes) for sizes in writes.values()] == [1]
