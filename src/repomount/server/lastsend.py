"""Every answer ends cleanly, so its connection is closed or goes idle, and its task
finishes.

Two ways the last message of an answer used to get stuck inside Hypercorn's send,
which is where Hypercorn ends the exchange (it queues `http.disconnect` for the
application, then closes the connection or puts it back to idle and starts its
keep-alive timer):
- A streamed answer: Starlette streams beside a task that waits for
  `http.disconnect`; once Hypercorn queued it, that task cancelled the stream's task
  right inside that send, the timer never started, and the connection stayed open
  forever. While the last message is being sent, a disconnect is held back until the
  send has returned.
- An answer that refused a body part way (413, 404 before reading it): the body's
  chunks fill Hypercorn's queue to the application, which reads no more, so queueing
  `http.disconnect` waited forever, and each such request left a task and its queued
  chunks behind. While the last message is sent, what is left of the body is drained
  (the connection is closed by then: only what already arrived). Such an answer reads
  a small body first (the connection then serves the next request), or says
  `Connection: close`: without it, a client that sent its next request on the
  connection got no answer ("Server disconnected", once in CI, from the Relace SDK).
Nothing is shielded: a shutdown still cancels everything.
"""

from __future__ import annotations

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# An answer given before its request's body was read waits this long for a body of at
# most this many bytes, so that its connection can serve the next request.
DRAIN_MAX = 64 << 10
DRAIN_WAIT = 1.0


class FinishLastSend:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Whether the app has received the whole body (or the disconnect): at once for
        # a request without one.
        headers = dict(scope["headers"])
        body_done = headers.get(b"content-length", b"0") == b"0" and (
            b"transfer-encoding" not in headers
        )
        length = headers.get(b"content-length", b"")
        small_body = length.isdigit() and int(length) <= DRAIN_MAX
        sending_last = False
        last_sent = trio.Event()

        async def receive_after_the_last() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.disconnect":
                body_done = True
                if sending_last:
                    await last_sent.wait()
            elif not message.get("more_body"):
                body_done = True
            return message

        async def drain() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        async def send_tracking_the_last(message: Message) -> None:
            nonlocal sending_last
            if message["type"] == "http.response.start" and not body_done:
                # Answered before its body was read (a 404 for an unknown repo, a
                # 413). A small body is read first, so the connection stays usable;
                # else it closes after this answer, and says so: a client that sent
                # its next request on it would get no answer at all.
                if small_body and message.get("status") != 408:  # (408: it stalled)
                    with trio.move_on_after(DRAIN_WAIT):
                        while not body_done:
                            await receive_after_the_last()
                if not body_done:
                    kept = [
                        (k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"
                    ]
                    message = {**message, "headers": [*kept, (b"connection", b"close")]}
            if message["type"] != "http.response.body" or message.get("more_body"):
                await send(message)
                return
            sending_last = True
            try:
                if body_done:
                    await send(message)
                    return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(drain)
                    await send(message)
                    nursery.cancel_scope.cancel()
            finally:
                last_sent.set()

        await self.app(scope, receive_after_the_last, send_tracking_the_last)
