"""How long, and how much, a remote may take: the client's defence against a slow or
hostile server (docs/semantics.md, "Failures").

- `Timeouts`: to connect, to the first byte of an answer, between two bytes, and an
  overall deadline that grows with the bytes that came (`read + n / min_rate` for n
  bytes): a server trickling one byte every few seconds cannot hold a request open
  forever, while a 1 GB file at any rate above `min_rate` still arrives whole.
- `Guarded`: an answer's body held to those timeouts as it arrives (streamed
  downloads, bulk reads and listings alike).
- `read_body`: a body read into memory, never more than a cap (64 MiB for a listing
  page by default: an endless body is an error, not gigabytes of memory).
- `decode_json`: JSON nested at most 64 deep (a deeper answer is an error, not a
  RecursionError); `MAX_LISTING_ENTRIES` bounds a listing of many pages.
- A download is bounded by the size its listing gave (downloads.py: `allowed`, `Capped`).

A stalled answer raises `Stalled`, an `Unavailable` that is not retried at once: a
server that stalled once will likely stall again, and the mount should go offline
(serve what it has) within the stated bound rather than multiply it by retries.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, cast

import httpx
import trio

from repomount import options
from repomount.remotes.errors import ProtocolError, Unavailable

MAX_ANSWER = 64 << 20  # bytes of an answer read into memory (a listing page, a commit result)
MAX_ERROR_ANSWER = 64 << 10  # bytes of an error answer read (only its message is used)
MAX_JSON_DEPTH = 64  # levels of nesting in a JSON answer (ours use five at most)
# Entries of one listing, all its pages together (a repo of this many files takes
# gigabytes of the mount's memory): a server paging on and on is stopped there.
MAX_LISTING_ENTRIES = 2_000_000


class Stalled(Unavailable):
    """The remote took longer than its timeouts allow: not retried within the request
    (the caller goes offline, or retries the change later)."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds (and bytes per second) a remote may take; see the module docstring.

    `answer` also bounds sending a request: a request of n bytes must be answered
    within `connect + answer + n / min_rate` of being started."""

    connect: float = options.CONNECT_TIMEOUT
    answer: float = options.ANSWER_TIMEOUT
    read: float = options.READ_TIMEOUT
    min_rate: float = options.MIN_RATE

    def __post_init__(self) -> None:
        if min(self.connect, self.answer, self.read, self.min_rate) <= 0:
            raise ValueError("timeouts and the minimum rate must be positive")

    def for_httpx(self) -> httpx.Timeout:
        """httpx's own per-operation timeouts: its read timeout also covers the wait for
        an answer's headers, which `answer` governs (`Guarded` holds the body to `read`)."""
        return httpx.Timeout(
            connect=self.connect,
            read=max(self.answer, self.read),
            write=self.read,
            pool=self.connect,
        )

    def holding(self, wait: float) -> Timeouts:
        """For a request the server may hold `wait` seconds before answering (a long-poll)."""
        return replace(self, answer=self.answer + max(wait, 0.0))

    def send_deadline(self, began: float, length: int) -> float:
        """When a request of `length` bytes begun at `began` must have its answer's headers."""
        return began + self.connect + self.answer + length / self.min_rate

    def stalled(self, budget: float, received: int, waited: float, context: str) -> Stalled:
        """The error for a body whose next bytes did not come within `budget` seconds
        (see `body_wait`), after `received` bytes in `waited` seconds of waiting."""
        if budget < self.read:
            why = (
                f"the answer came slower than {self.min_rate:g} bytes/s "
                f"({received} bytes in {waited:.1f} s)"
            )
        else:
            why = f"the answer stopped for {self.read:g} s after {received} bytes"
        return Stalled(f"{context}: {why}")


DEFAULT_TIMEOUTS = Timeouts()


def body_wait(t: Timeouts, received: int, waited: float) -> float:
    """Seconds a body may take to bring its next bytes, after `received` bytes came in
    `waited` seconds of waiting: no silence longer than `read`, and no more than
    `read + n / min_rate` seconds in all for its first n bytes."""
    return max(0.0, min(t.read, t.read + received / t.min_rate - waited))


def answer_too_large(limit: int) -> str:
    return f"answer larger than {_size(limit)}"


class Guarded(httpx.AsyncByteStream):
    """An answer's body as it arrives, held to `timeouts`: no silence longer than `read`,
    and no more than `read + n / min_rate` seconds spent waiting for its first n bytes
    (time the caller spends between reads is not counted: that is our backpressure)."""

    def __init__(self, inner: httpx.AsyncByteStream, timeouts: Timeouts, context: str) -> None:
        self._inner = inner
        self._timeouts = timeouts
        self._context = context

    async def __aiter__(self) -> AsyncIterator[bytes]:
        t = self._timeouts
        received, waited = 0, 0.0
        chunks = self._inner.__aiter__()
        while True:
            budget = body_wait(t, received, waited)
            started = trio.current_time()
            with trio.move_on_after(budget) as scope:
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
            waited += trio.current_time() - started
            if scope.cancelled_caught:
                raise t.stalled(budget, received, waited, self._context)
            received += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


async def read_body(
    response: httpx.Response, limit: int, context: str, *, truncate: bool = False
) -> httpx.Response:
    """A copy of the response with its (decoded) body read into memory, at most `limit`
    bytes of it: more is a ProtocolError, or with `truncate` cut off (for an error's
    message). The caller still closes the original."""
    parts: list[bytes] = []
    size = 0
    # (an async generator in httpx: closed here when a cut leaves it unfinished)
    async with aclosing(cast(AsyncGenerator[bytes, None], response.aiter_bytes())) as chunks:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                if not truncate:
                    raise ProtocolError(f"{context}: {answer_too_large(limit)}")
                parts.append(chunk[: len(chunk) - (size - limit)])
                break
            parts.append(chunk)
    # A fresh response holding the decoded bytes (no Content-Encoding: decoded already).
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=b"".join(parts),
        request=response.request,
        extensions=response.extensions,
    )


# --------------------------------------------------------------------------- JSON

# Everything but the bytes that shape JSON: brackets and the quotes around strings.
_NOT_SHAPE = bytes(b for b in range(256) if b not in b'[]{}"')
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")  # depth does not care which kind


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether UTF-8 JSON `raw` nests deeper than `limit`, found without parsing it
    (C-speed byte operations: a listing page of 10,000 entries takes ~15 ms)."""
    shape = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_SHAPE)
    outside = b"".join(shape.split(b'"')[::2]).translate(_ONE_BRACKET)  # strings dropped
    for _ in range(limit):
        if not outside:
            return False
        outside = outside.replace(b"[]", b"")  # one level of innermost pairs
    return b"[]" in outside  # (what cannot shrink is not JSON: json.loads will say so)


def decode_json(raw: bytes) -> Any:
    """`raw` as JSON; ValueError (one line) when it is not UTF-8 JSON or nests too deep."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    if too_deep(raw):
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except RecursionError:  # (not expected after too_deep; never a traceback)
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n} bytes"
