"""Wakes long-polling change-feed requests when a repository gets a commit."""

from __future__ import annotations

from contextvars import ContextVar

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The repositories a request committed to, while it is being answered: their waiters
# wake once the answer is sent (WakeAfterAnswer). None outside a request.
_committed: ContextVar[set[str] | None] = ContextVar("repomount_feed_committed", default=None)


class ChangeHub:
    """One trio.Event per repository, set and replaced on every commit.

    A waiter takes the event *before* reading the head, so a commit landing between the
    read and the wait still wakes it. Only call from the trio thread.
    """

    def __init__(self) -> None:
        self._events: dict[str, trio.Event] = {}
        self.closing = False

    def event(self, repo: str) -> trio.Event:
        if self.closing:
            done = trio.Event()
            done.set()
            return done
        return self._events.setdefault(repo, trio.Event())

    def notify(self, repo: str) -> None:
        """`repo` got a commit: its waiters wake now, or, inside a request, once that
        request's answer is sent."""
        committed = _committed.get()
        if committed is not None:
            committed.add(repo)
        else:
            self.wake(repo)

    def wake(self, repo: str) -> None:
        event = self._events.pop(repo, None)
        if event is not None:
            event.set()

    def close(self) -> None:
        """Release every waiter now (server shutdown)."""
        self.closing = True
        for event in self._events.values():
            event.set()
        self._events.clear()


class WakeAfterAnswer:
    """Feed waiters of a repository a request commits to wake once its answer is sent
    (or the request ends without one). The committer hears first: answering the waiters
    (a store read and an answer each) went on beside the answer of a saved file's
    commit, on the server's one event loop, and delayed it."""

    def __init__(self, app: ASGIApp, hub: ChangeHub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        committed: set[str] = set()

        def wake() -> None:
            while committed:
                self.hub.wake(committed.pop())

        async def send_then_wake(message: Message) -> None:
            try:
                await send(message)
            finally:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    wake()

        token = _committed.set(committed)
        try:
            await self.app(scope, receive, send_then_wake)
        finally:
            _committed.reset(token)
            wake()
