"""Reading a listing of the native API page by page, the next page asked for before this
one is decoded.

A page of 10,000 entries costs the server about as long to answer as it costs us to
decode and check it (each ~50-100 ms here). The server names the next page's cursor in
an `X-Next-Cursor` header as well as in the body, so the request for page N+1 leaves as
soon as page N has arrived, and the server's work on it overlaps our decoding of page
N. The body's `next_cursor` stays the authority: a page asked for with a header that
disagrees with it is dropped and asked for again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import trio

from repomount.remotes.answers import json_object
from repomount.remotes.base import Listing, ProtocolError
from repomount.remotes.limits import MAX_LISTING_ENTRIES
from repomount.remotes.native_wire import TreePage, join_pages, tree_page

NEXT_CURSOR_HEADER = "X-Next-Cursor"
# Chances the next page's request gets to leave before this page is decoded, on the
# event loop. (Decoding in a worker thread instead made the mount's peak RSS 12 MiB
# higher in a listing of 100,000: scripts/bench --scale.) Two were enough here for the
# request to be on the wire; on a new connection the handshake overlaps the decoding.
SEND_FIRST = 3

Fetch = Callable[[Mapping[str, str | int]], Awaitable[httpx.Response]]


def _parse(response: httpx.Response) -> TreePage:
    return tree_page(json_object(response))


class _Ahead:
    """The request for one page, on its way while the page before it is parsed. Its
    failure is kept (not raised into the nursery, where it would come out inside an
    exception group) and raised by `result`, where the listing would have asked."""

    def __init__(self, cursor: str) -> None:
        self.cursor = cursor
        self.done = trio.Event()
        self.response: httpx.Response | None = None
        self.error: Exception | None = None
        self.scope = trio.CancelScope()

    async def run(self, fetch: Fetch, params: Mapping[str, str | int]) -> None:
        with self.scope:
            try:
                self.response = await fetch(params)
            except Exception as exc:  # (kept for result(); a cancel still propagates)
                self.error = exc
        self.done.set()

    async def result(self) -> httpx.Response:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        if self.response is None:  # (cancelled: never awaited then)
            raise RuntimeError("page request cancelled")
        return self.response


async def list_pages(
    fetch: Fetch, params: Mapping[str, Any], path: str, recursive: bool
) -> Listing:
    """Every page of the listing `params` asks for, joined (see module doc). A failure
    is raised as itself, not inside the nursery's exception group."""
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        try:
            pages = await _walk(nursery, fetch, params, path)
        except Exception as exc:
            failure = exc
            nursery.cancel_scope.cancel()  # (a page asked for ahead is not wanted)
    if failure is not None:
        raise failure
    return join_pages(path, pages, recursive=recursive)


async def _walk(
    nursery: trio.Nursery, fetch: Fetch, params: Mapping[str, Any], path: str
) -> list[TreePage]:
    pages: list[TreePage] = []
    cursors = set[str]()
    # What the pages could hold, or what they held where that is more: pages of entries
    # all skipped (or of none) that always name a next one must not go on for ever, nor
    # may pages holding more than the `limit` asked for (up to MAX_ANSWER each).
    per_page = max(1, int(params.get("limit", 1)))
    held = 0
    response = await fetch(params)
    while True:
        ahead = None
        hinted = response.headers.get(NEXT_CURSOR_HEADER)
        if hinted and hinted not in cursors:
            ahead = _Ahead(hinted)
            nursery.start_soon(ahead.run, fetch, {**params, "cursor": hinted})
            for _ in range(SEND_FIRST):
                await trio.lowlevel.checkpoint()
        pages.append(_parse(response))
        held += len(pages[-1].entries)
        listed = max(len(pages) * per_page, held)
        cursor = pages[-1].cursor
        if ahead is not None and ahead.cursor != cursor:
            ahead.scope.cancel()  # (the header said otherwise than the body)
            ahead = None
        if not cursor:
            return pages
        if listed > MAX_LISTING_ENTRIES or cursor in cursors:
            why = f"over {MAX_LISTING_ENTRIES} entries" if cursor not in cursors else "a loop"
            raise ProtocolError(f"listing of {path!r}: its pages make {why}")
        cursors.add(cursor)
        if ahead is not None:
            response = await ahead.result()
        else:
            response = await fetch({**params, "cursor": cursor})
