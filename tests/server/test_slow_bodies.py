"""A request body must arrive in time (server/body.py, body_chunks): this stop's
security probe held 10,500 connections open for as long as it liked, each sending one
byte every 20 s, each holding a socket and a spool file. A body now gets BODY_IDLE
seconds plus one second per BODY_MIN_RATE bytes; past that it is 408. A slow but
steady one still arrives. In-process, on trio's virtual clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from repomount.server.app import create_app
from repomount.server.backend import Backend, ServerOptions
from repomount.server.body import BODY_IDLE, BODY_MIN_RATE
from repomount.server.sqlite_store import SqliteStore


async def _send(
    store: SqliteStore, method: str, path: str, pieces: list[bytes], every: float, length: int
) -> tuple[int, dict[str, Any], float]:
    """`pieces` of a body of `length` bytes, one every `every` seconds, and then nothing
    more: (status, JSON answer, seconds until the answer)."""
    app = create_app(Backend(store, ServerOptions()), log_requests=False)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "headers": [(b"content-length", str(length).encode())],
    }  # fmt: skip
    todo = list(pieces)
    answer: list[dict[str, Any]] = []
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not todo:
            await trio.sleep_forever()
        await trio.sleep(every)
        piece = todo.pop(0)
        sent += len(piece)
        return {"type": "http.request", "body": piece, "more_body": sent < length}

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    began = trio.current_time()
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in answer[1:])
    return int(answer[0]["status"]), json.loads(body) if body else {}, trio.current_time() - began


async def test_a_body_that_trickles_is_408_and_stores_nothing(
    store: SqliteStore, autojump_clock: object
) -> None:
    status, body, took = await _send(
        store, "PUT", "/v1/repos/r/files/f", [b"x"] * 1000, every=20.0, length=1000
    )
    assert status == 408 and body["error"]["code"] == "request_timeout", body
    assert BODY_IDLE <= took < BODY_IDLE + 25
    assert store.stat("r", "f")[1] is None


async def test_a_json_body_that_stops_is_408(store: SqliteStore, autojump_clock: object) -> None:
    status, body, took = await _send(
        store, "POST", "/v1/repos/r/commits", [b'{"operations": ['], every=0.1, length=100
    )
    assert status == 408, body
    assert BODY_IDLE <= took < BODY_IDLE + 1


async def test_a_slow_but_steady_body_arrives(store: SqliteStore, autojump_clock: object) -> None:
    """Twice the minimum rate, for ten times the idle allowance: taken."""
    piece = b"y" * (2 * BODY_MIN_RATE)
    count = int(10 * BODY_IDLE)
    status, body, took = await _send(
        store, "PUT", "/v1/repos/r/files/slow", [piece] * count, every=1.0,
        length=len(piece) * count,
    )  # fmt: skip
    assert status == 201, body
    assert took >= count


@pytest.mark.parametrize(
    "path",
    [
        "/v1/repos",  # native
        "/relace/v1/repo",  # Relace
        "/terminaluse/filesystems",  # Terminal Use
        "/api/repos",  # Oxen
        "/api/0/organizations/o/releases/",  # Sentry
    ],
)
async def test_every_face_answers_a_stalled_body_with_408(
    store: SqliteStore, autojump_clock: object, path: str
) -> None:
    """Each face answers the shared body reader's refusals in its own shape, with
    their status: a body that stops was a 500 on Terminal Use and a 400 on Sentry."""
    status, _, took = await _send(store, "POST", path, [b'{"name": '], every=0.1, length=100)
    assert status == 408
    assert BODY_IDLE <= took < BODY_IDLE + 1
