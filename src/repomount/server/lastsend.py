"""Streamed answers end cleanly, so their connection can go idle and be closed.

Starlette streams a response beside a task that waits for the client to go away; once
the last chunk is handed to Hypercorn, Hypercorn tells that task the exchange is over,
and the task cancels the stream's task while it is still inside Hypercorn's send,
which is where Hypercorn puts the connection back to idle and starts its keep-alive
timer. Cancelled there, the timer never started and the connection stayed open
forever. The send of the last message is shielded from that cancellation (Hypercorn
shields its own socket writes the same way), so it always runs to the end.
"""

from __future__ import annotations

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ShieldLastSend:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_last_shielded(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                with trio.CancelScope(shield=True):
                    await send(message)
                return
            await send(message)

        await self.app(scope, receive, send_last_shielded)
