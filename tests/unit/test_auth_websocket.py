"""The token check guards every kind of connection, not HTTP alone: no face serves a
WebSocket yet, and one added later must not be reachable without the token (the
check used to let every scope that was not HTTP through)."""

from __future__ import annotations

from typing import Any

from starlette.types import Message, Receive, Scope, Send

from repomount.server.auth import BearerAuth


class _Accepting:
    """An app that accepts whatever reaches it."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reached.append(scope["type"])
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})


def _handshake(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "websocket", "path": "/v1/feed", "query_string": b"", "headers": headers}


async def _run(app: BearerAuth, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_websocket_handshake_without_the_token_is_closed_unaccepted() -> None:
    inner = _Accepting()
    auth = BearerAuth(inner, "s3cret")
    for headers in ([], [(b"authorization", b"Bearer wrong")]):
        sent = await _run(auth, _handshake(headers))
        assert sent == [{"type": "websocket.close", "code": 1008}]
    assert inner.reached == []


async def test_a_websocket_handshake_with_the_token_reaches_the_app() -> None:
    inner = _Accepting()
    auth = BearerAuth(inner, "s3cret")
    sent = await _run(auth, _handshake([(b"authorization", b"Bearer s3cret")]))
    assert sent == [{"type": "websocket.accept"}]
    assert inner.reached == ["websocket"]


async def test_lifespan_events_pass_without_a_token() -> None:
    inner = _Accepting()
    await _run(BearerAuth(inner, "s3cret"), {"type": "lifespan"})
    assert inner.reached == ["lifespan"]
