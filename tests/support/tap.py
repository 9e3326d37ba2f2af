"""An httpx transport that records every request a client sends, and may meddle.

By default it wraps the real network (`httpx.AsyncHTTPTransport`); give it
`httpx.MockTransport(handler)` to put a scripted server behind it instead. Either way:

- `sent` lists every request, in order (`to(suffix)`: those whose path ends so);
- `before(request)` runs before a request goes out, and may return a replacement;
- `after(request, response)` sees each response and returns it or a replacement;
- `drop(request)` true: the server handles the request, but its answer is lost (the
  client sees the connection close, as when a network fails after the commit);
- `fail(request)` true: the server handles the request, but the client is answered
  `failure(request)` instead (a 502 from a gateway by default).

Selectors such as `once(path_ends("/commits"))` pick the requests to drop or fail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

Select = Callable[[httpx.Request], bool]
Before = Callable[[httpx.Request], Awaitable[httpx.Request | None]]
After = Callable[[httpx.Request, httpx.Response], Awaitable[httpx.Response]]


def bad_gateway(request: httpx.Request) -> httpx.Response:
    return httpx.Response(502, text="<html>502 Bad Gateway</html>")


def path_ends(suffix: str, method: str | None = None) -> Select:
    """Requests whose URL path ends with `suffix` (and, if given, of that method)."""
    return lambda r: r.url.path.endswith(suffix) and method in (None, r.method)


def once(select: Select) -> Select:
    """Only the first request `select` picks."""
    done = False

    def first(request: httpx.Request) -> bool:
        nonlocal done
        if done or not select(request):
            return False
        done = True
        return True

    return first


class Tap(httpx.AsyncBaseTransport):
    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        before: Before | None = None,
        after: After | None = None,
        drop: Select | None = None,
        fail: Select | None = None,
        failure: Callable[[httpx.Request], httpx.Response] = bad_gateway,
    ) -> None:
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self.before = before
        self.after = after
        self.drop = drop
        self.fail = fail
        self.failure = failure
        self.sent: list[httpx.Request] = []
        self.dropped: list[httpx.Request] = []
        self.failed: list[httpx.Request] = []

    def to(self, suffix: str) -> list[httpx.Request]:
        """The requests sent so far whose URL path ends with `suffix`."""
        return [r for r in self.sent if r.url.path.endswith(suffix)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.before is not None:
            request = await self.before(request) or request
        self.sent.append(request)
        response = await self.inner.handle_async_request(request)
        if self.drop is not None and self.drop(request):
            self.dropped.append(request)
            await response.aclose()  # the server did the work; its answer never arrives
            raise httpx.RemoteProtocolError("Server disconnected without sending a response")
        if self.fail is not None and self.fail(request):
            self.failed.append(request)
            await response.aread()
            await response.aclose()
            return self.failure(request)
        if self.after is not None:
            response = await self.after(request, response)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
