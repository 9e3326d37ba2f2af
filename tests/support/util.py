"""Small helpers every test tier uses: a content hash, and waiting for a condition.

Tests wait for the thing they need (a file shows, a request reached the server, an
editor drew its prompt) with `wait_until`, never with a fixed sleep: a sleep is too
short on a loaded machine and needlessly long on an idle one.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")

POLL_INTERVAL = 0.05


def sha(data: bytes) -> str:
    """The sha256 of `data`, in hex: the version the remotes and the vfs use for content."""
    return hashlib.sha256(data).hexdigest()


def wait_until(
    condition: Callable[[], T | None],
    timeout: float = 15.0,
    what: str = "the condition",
    *,
    interval: float = POLL_INTERVAL,
) -> T:
    """Call `condition` until it returns something true, and return that; after
    `timeout` seconds fail, naming `what` was waited for. Blocking: for threads and sync
    tests (a trio test uses `wait_until_async`)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)  # the poll interval


async def wait_until_async(
    condition: Callable[[], T | None],
    timeout: float = 15.0,
    what: str = "the condition",
    *,
    interval: float = POLL_INTERVAL,
) -> T:
    """`wait_until` for trio tests: polls without blocking the event loop.

    `timeout` is real (wall-clock) time, so an autojump clock cannot run it out while a
    thread works; `interval` is trio's clock, virtual under autojump_clock."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await trio.sleep(interval)  # the poll interval


def in_parallel(work: Callable[[int], None], count: int) -> None:
    """`work(0)` ... `work(count - 1)`, each in a thread of its own, all at once; returns
    when all are done."""
    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
