"""Wakes long-polling change-feed requests when a repository gets a commit."""

from __future__ import annotations

import trio


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
        event = self._events.pop(repo, None)
        if event is not None:
            event.set()

    def close(self) -> None:
        """Release every waiter now (server shutdown)."""
        self.closing = True
        for event in self._events.values():
            event.set()
        self._events.clear()
