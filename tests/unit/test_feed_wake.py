"""A commit's change-feed waiters wake once the committer's answer is sent: on the
server's one event loop, answering them (a store read and an answer each) went on
beside the answer of a saved file's commit and delayed it."""

from __future__ import annotations

import pytest
import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from repomount.server.hub import ChangeHub, WakeAfterAnswer

SCOPE: Scope = {"type": "http", "method": "POST", "path": "/v1/repos/r/commits", "headers": []}


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _committing_app(hub: ChangeHub, *, fail: bool = False) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        hub.notify("r")  # (what Backend.committing does once the store committed)
        if fail:
            raise RuntimeError("the answer could not be made")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        await send({"type": "http.response.body", "body": b"}"})

    return app


async def test_waiters_wake_after_the_answer_is_sent() -> None:
    hub = ChangeHub()
    waiter = hub.event("r")
    seen: list[tuple[str, bool]] = []

    async def send(message: Message) -> None:
        seen.append((message["type"], waiter.is_set()))

    await WakeAfterAnswer(_committing_app(hub), hub)(SCOPE, _receive, send)
    assert seen == [
        ("http.response.start", False),
        ("http.response.body", False),
        ("http.response.body", False),
    ]
    assert waiter.is_set()
    assert hub.event("r") is not waiter  # (a new event for the next commit)


async def test_waiters_wake_when_the_request_ends_without_an_answer() -> None:
    hub = ChangeHub()
    waiter = hub.event("r")

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")

    with pytest.raises(RuntimeError):
        await WakeAfterAnswer(_committing_app(hub, fail=True), hub)(SCOPE, _receive, send)
    assert waiter.is_set()


async def test_waiters_wake_when_the_answer_cannot_be_sent() -> None:
    hub = ChangeHub()
    waiter = hub.event("r")

    async def send(message: Message) -> None:
        raise OSError("the client went away")

    with pytest.raises(OSError):
        await WakeAfterAnswer(_committing_app(hub), hub)(SCOPE, _receive, send)
    assert waiter.is_set()


async def test_a_commit_outside_a_request_wakes_at_once() -> None:
    hub = ChangeHub()
    waiter = hub.event("r")
    hub.notify("r")
    assert waiter.is_set()


async def test_requests_keep_their_commits_apart() -> None:
    """Two requests answered at once: each wakes the waiters of what it committed."""
    hub = ChangeHub()
    first, second = hub.event("a"), hub.event("b")
    release = trio.Event()

    def app_for(repo: str, *, hold: bool) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            hub.notify(repo)
            if hold:
                await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        return app

    async def send(message: Message) -> None:
        pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(WakeAfterAnswer(app_for("a", hold=True), hub), SCOPE, _receive, send)
        await WakeAfterAnswer(app_for("b", hold=False), hub)(SCOPE, _receive, send)
        assert second.is_set() and not first.is_set()
        release.set()
    assert first.is_set()
