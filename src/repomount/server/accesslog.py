"""One access line per request on stderr: `PUT /v1/repos/x/files/a 201 3ms`.

The path is logged as sent (percent-encoded, without the query string), so a line never
holds spaces or newlines from file names, nor secrets from query parameters; headers
(and so the token) are never logged. Each line is flushed at once, and written before
the last byte of the response goes out: tests count requests by reading the log right
after their responses complete.
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

        length: int | None = None  # the response's Content-Length, when it has one
        sent = 0

        async def send_and_log(message: Message) -> None:
            nonlocal status, length, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-length":
                        length = int(value)
            elif message["type"] == "http.response.body" and not logged:
                sent += len(message.get("body", b""))
                # Log before the last byte goes out: a client has the whole response once
                # Content-Length bytes arrived, and may look for its line right away.
                if not message.get("more_body") or (length is not None and sent >= length):
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
