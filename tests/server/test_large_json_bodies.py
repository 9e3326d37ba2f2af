"""JSON bodies are parsed whole, at up to ten times their size in memory (a security
probe took the server to 570 MB with one 57 MiB body, with no bound on how many at
once). Bodies over LARGE_BODY now take turns to be parsed and used; small ones (a saved
file's commit) never wait, and a client still sending holds no turn. In-process."""

from __future__ import annotations

import json
from typing import Any

import trio

from repomount.server.app import create_app
from repomount.server.backend import Backend, ServerOptions
from repomount.server.body import LARGE_BODY, parsing_turn
from repomount.server.sqlite_store import SqliteStore


async def test_large_bodies_take_turns_and_small_ones_never_wait(
    store: SqliteStore, autojump_clock: object
) -> None:
    backend = Backend(store, ServerOptions())
    backend.large_bodies = trio.CapacityLimiter(1)
    big, small = b" " * (LARGE_BODY + 1), b"{}"
    seen: list[tuple[str, str, float]] = []

    async def use(name: str, raw: bytes, start: float) -> None:
        await trio.sleep(start)
        async with parsing_turn(backend, raw):
            seen.append(("in", name, trio.current_time()))
            await trio.sleep(10)
            seen.append(("out", name, trio.current_time()))

    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(use, "big1", big, 0)
        nursery.start_soon(use, "big2", big, 1)
        nursery.start_soon(use, "small", small, 2)
    when = {(what, name): t - t0 for what, name, t in seen}
    assert when[("in", "big1")] == 0
    assert when[("in", "small")] == 2  # (while big1 holds the only turn)
    assert when[("in", "big2")] == when[("out", "big1")] == 10


async def _commit(app: Any, body: bytes) -> tuple[int, dict[str, Any]]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/repos/r/commits",
        "raw_path": b"/v1/repos/r/commits", "query_string": b"", "root_path": "",
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": [(b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json")],
    }  # fmt: skip
    sent = False
    answer: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await trio.sleep_forever()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    await app(scope, receive, send)
    reply = b"".join(m.get("body", b"") for m in answer[1:])
    return int(answer[0]["status"]), json.loads(reply)


async def test_large_commits_sent_at_once_all_land(store: SqliteStore) -> None:
    backend = Backend(store, ServerOptions())
    backend.large_bodies = trio.CapacityLimiter(1)
    app = create_app(backend, log_requests=False)
    bodies = [
        json.dumps(
            {"operations": [{"op": "write", "path": f"f{n}", "content_b64": "aGk="}],
             "message": "m" * LARGE_BODY}
        ).encode()
        for n in range(3)
    ]  # fmt: skip
    results: list[int] = []

    async def one(body: bytes) -> None:
        status, reply = await _commit(app, body)
        assert status == 201, reply
        results.append(status)

    async with trio.open_nursery() as nursery:
        for body in bodies:
            nursery.start_soon(one, body)
    assert results == [201] * 3
    assert [store.stat("r", f"f{n}")[1] is not None for n in range(3)] == [True] * 3
