"""h11body's patch of h11 (the body's bytes handed over without two more copies) takes
effect, and h11 still parses every body, split any way, exactly."""

from __future__ import annotations

import h11
from h11 import _receivebuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from repomount import h11body
from repomount.remotes import http  # noqa: F401  (installs it, as the mount does)
from repomount.server import run  # noqa: F401  (and as the server does)


def test_the_patch_is_installed() -> None:
    assert h11body.install()
    assert _receivebuffer.ReceiveBuffer.maybe_extract_at_most is h11body._maybe_extract_at_most


def test_a_read_of_everything_hands_the_buffer_over() -> None:
    buf = _receivebuffer.ReceiveBuffer()
    buf += b"abcdef"
    got = buf.maybe_extract_at_most(100)
    assert got == b"abcdef" and len(buf) == 0
    buf += b"gh"  # a fresh buffer: what was handed over does not change
    assert got == b"abcdef"
    assert buf.maybe_extract_at_most(1) == b"g" and bytes(buf) == b"h"
    assert buf.maybe_extract_at_most(0) is None
    empty = _receivebuffer.ReceiveBuffer()
    assert empty.maybe_extract_at_most(5) is None


def _responses(bodies: list[bytes], chunked: list[bool]) -> bytes:
    out = b""
    for body, ch in zip(bodies, chunked, strict=True):
        if ch:
            out += b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            for i in range(0, len(body), 7777):
                piece = body[i : i + 7777]
                out += b"%x\r\n" % len(piece) + piece + b"\r\n"
            out += b"0\r\n\r\n"
        else:
            out += b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    return out


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=40_000), min_size=1, max_size=3),
    chunked=st.data(),
    cuts=st.lists(st.integers(min_value=1, max_value=30_000), max_size=12),
)
def test_h11_parses_pipelined_answers_split_anywhere(
    bodies: list[bytes], chunked: st.DataObject, cuts: list[int]
) -> None:
    kinds = [chunked.draw(st.booleans()) for _ in bodies]
    wire = _responses(bodies, kinds)
    pieces, at = [], 0
    for c in cuts:
        pieces.append(wire[at : at + c])
        at += c
    pieces.append(wire[at:])
    conn = h11.Connection(h11.CLIENT)
    got: list[bytes] = []
    for _ in bodies:
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        data = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(pieces.pop(0) if pieces else b"")
                continue
            if isinstance(event, h11.Data):
                data += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        got.append(data)
        conn.start_next_cycle()
    assert got == bodies
