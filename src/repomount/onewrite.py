"""A message's head goes out in one write with its body, not in writes of its own.

httpcore (the mount's HTTP client) writes a request's head, then each piece of its body,
then its end, each with a send of its own; Hypercorn (the server) does the same with an
answer's head, body and end (an empty one, for a body of known length). On loopback, or
over a veth link, a send runs the receiver's side of the stack at once and wakes it: a
saved file's commit cost three sends and two wake-ups more on each side, and the other
end parsed the head before the body had come (0.3 ms of a 3.5 ms save, each way).

Here the head is held back and sent with the first piece of the body, or with the end
when there is no body; a body piece over ONE_WRITE_MAX goes on its own (no copy of a
large piece), after the head. Empty writes are not made. Nothing waits that did not
wait before: Hypercorn sends an answer's head only when its first body part comes, and
a request's head is held only when its body is known to be small (a Content-Length up
to ONE_WRITE_MAX, or none): a body streamed as it is written (a staged upload, sent
without a length) may take its time, and the server must see the request meanwhile.

Patches of the two libraries' internals, like h11body.py's, installed by the mount's
HTTP client (remotes/http.py) and by the server (server/run.py).
tests/unit/test_one_write.py checks that each takes effect, and that requests and
answers still arrive whole, with and without bodies, large and small.
"""

from __future__ import annotations

from typing import Any

import h11

ONE_WRITE_MAX = 64 * 1024  # a head and a body piece up to this size go in one write
_HEAD = "_repomount_held_head"


def _joined(owner: Any, data: bytes | None) -> list[bytes]:
    """What to write now: the held head (if any) with `data`, in one write where small."""
    head: bytes | None = owner.__dict__.pop(_HEAD, None)
    if not head:
        return [data] if data else []
    if not data:
        return [head]
    if len(data) <= ONE_WRITE_MAX:
        return [head + data]
    return [head, data]


def _small_body(headers: Any) -> bool:
    """Whether a request's body is known to be small: none, or a Content-Length up to
    ONE_WRITE_MAX (h11's headers: lower-case names)."""
    for name, value in headers:
        if name == b"transfer-encoding":
            return False
        if name == b"content-length":
            return value.isdigit() and int(value) <= ONE_WRITE_MAX
    return True


def install_client() -> bool:
    """Patch httpcore's HTTP/1.1 connection (idempotent). False when it has no such
    method to patch."""
    import httpcore

    cls = httpcore.AsyncHTTP11Connection
    original = getattr(cls, "_send_event", None)
    if original is None or getattr(original, "_repomount_one_write", False):
        return original is not None

    async def _send_event(self: Any, event: h11.Event, timeout: float | None = None) -> None:
        data = self._h11_state.send(event)
        if isinstance(event, h11.Request) and _small_body(event.headers):
            self.__dict__[_HEAD] = data  # (its body's first piece, or its end, follows)
            return
        for piece in _joined(self, data):
            await self._network_stream.write(piece, timeout=timeout)

    _send_event._repomount_one_write = True  # type: ignore[attr-defined]
    cls._send_event = _send_event  # type: ignore[method-assign]
    return True


def install_server() -> bool:
    """Patch Hypercorn's HTTP/1.1 protocol (idempotent). False when it has no such
    method to patch."""
    from hypercorn.events import RawData
    from hypercorn.protocol.h11 import H11Protocol

    original = getattr(H11Protocol, "_send_h11_event", None)
    if original is None or getattr(original, "_repomount_one_write", False):
        return original is not None

    async def _send_h11_event(self: Any, event: Any) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if isinstance(event, h11.Response):
            self.__dict__[_HEAD] = data  # (its body, or its end, follows at once)
            return
        for piece in _joined(self, data):
            await self.send(RawData(data=piece))

    _send_h11_event._repomount_one_write = True  # type: ignore[attr-defined]
    H11Protocol._send_h11_event = _send_h11_event  # type: ignore[method-assign]
    return True
