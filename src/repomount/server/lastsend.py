"""Streamed answers end cleanly, so their connection can go idle and be closed.

Starlette streams a response beside a task that waits for `http.disconnect`. Hypercorn
sends that message to the application from inside the send of the response's last
message, just before it puts the connection back to idle and starts its keep-alive
timer; the waiting task then cancelled the stream's task right there, the timer never
started, and the connection stayed open forever. So while the last message is being
sent, a disconnect is held back until that send has returned. Nothing is shielded: a
shutdown still cancels everything.
"""

from __future__ import annotations

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class FinishLastSend:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sending_last = False
        last_sent = trio.Event()

        async def send_tracking_the_last(message: Message) -> None:
            nonlocal sending_last
            if message["type"] != "http.response.body" or message.get("more_body"):
                await send(message)
                return
            sending_last = True
            try:
                await send(message)
            finally:
                last_sent.set()

        async def receive_after_the_last() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and sending_last:
                await last_sent.wait()
            return message

        await self.app(scope, receive_after_the_last, send_tracking_the_last)
