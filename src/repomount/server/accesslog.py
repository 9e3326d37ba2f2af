"""One access line per request on stderr: `PUT /v1/repos/x/files/a 201 3ms`.

The path is logged as sent (percent-encoded, without the query string), so a line never
holds spaces or newlines from file names, nor secrets from query parameters; headers
(and so the token) are never logged. Each line is flushed at once: tests count requests
by reading the log while the server runs.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Logged when the client went away before any response was sent (nginx's convention).
CLIENT_CLOSED = 499


class AccessLog:
    def __init__(self, app: ASGIApp, stream: TextIO | None = None) -> None:
        self.app = app
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = CLIENT_CLOSED
        logged = False

        def log() -> None:
            nonlocal logged
            logged = True
            ms = round((time.monotonic() - start) * 1000)
            raw = scope.get("raw_path") or scope["path"].encode()
            path = raw.split(b"?", 1)[0].decode("latin-1")
            stream = self.stream or sys.stderr
            stream.write(f"{scope['method']} {path} {status} {ms}ms\n")
            stream.flush()

        async def send_and_log(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Log before the last byte goes out: whoever saw the response complete
                # can already find its line.
                log()
            await send(message)

        try:
            await self.app(scope, receive, send_and_log)
        except ClientDisconnect:
            pass  # nobody is left to answer; logged as 499 unless a status went out
        except Exception:
            if status == CLIENT_CLOSED:
                status = 500
            raise
        finally:
            if not logged:
                log()
