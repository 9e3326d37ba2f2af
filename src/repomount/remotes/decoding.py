"""Compressed answers, decoded in bounded pieces.

httpx decodes a compressed body one network read at a time, each read whole: a few
hundred KiB of a crafted gzip answer decode to hundreds of MiB in one piece, and zstd
goes much further, before any cap of ours (limits.read_body) sees a byte. So the client
asks only for gzip and deflate (`ACCEPT_ENCODING`), decodes them here into pieces of at
most `PIECE` bytes, and refuses an answer in any other encoding: a server that sends
what it was not asked for gets a ProtocolError, not our memory. httpx then sees a plain
body (the Content-Encoding header is taken off the response).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

import httpx

from repomount.remotes.errors import ProtocolError

ACCEPT_ENCODING = "gzip, deflate"
PIECE = 1 << 20  # the most one decoded piece holds

_GZIP = 16 + zlib.MAX_WBITS
_ZLIB = zlib.MAX_WBITS
_RAW = -zlib.MAX_WBITS  # deflate without the zlib wrapper, which some servers send


def decode_answer(response: httpx.Response, context: str) -> None:
    """Make the response's body decode here, bounded, if it is compressed; raise
    ProtocolError for an encoding we did not ask for."""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ProtocolError(
            f"{context}: the answer is encoded as {encoding[:40]!r}, which was not asked for"
        )
    assert isinstance(response.stream, httpx.AsyncByteStream)
    response.stream = Decoded(response.stream, encoding, context)
    del response.headers["Content-Encoding"]


class Decoded(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, encoding: str, context: str) -> None:
        self._inner = inner
        self._encoding = encoding
        self._context = context

    async def __aiter__(self) -> AsyncIterator[bytes]:
        wbits = _ZLIB if self._encoding == "deflate" else _GZIP
        d = zlib.decompressobj(wbits)
        started = False
        try:
            async for raw in self._inner:
                if not started and raw and wbits == _ZLIB:
                    started = True
                    try:
                        d.copy().decompress(raw[:64], 1)  # zlib-wrapped, or raw deflate?
                    except zlib.error:
                        d = zlib.decompressobj(_RAW)
                for piece in _pieces(d, raw):
                    yield piece
            for piece in _pieces(d, b""):
                yield piece
            if not d.eof and self._encoding != "deflate":
                raise ProtocolError(f"{self._context}: the gzip answer ended early")
        except zlib.error as exc:
            why = f"the answer's encoding is broken: {exc}"
            raise ProtocolError(f"{self._context}: {why}") from None

    async def aclose(self) -> None:
        await self._inner.aclose()


def _pieces(d: zlib._Decompress, data: bytes) -> Iterator[bytes]:
    """What `data` decodes to, PIECE bytes at most at a time (input that would decode
    to more waits in the decompressor's unconsumed tail)."""
    while True:
        out = d.decompress(data, PIECE)
        if out:
            yield out
        data = d.unconsumed_tail
        if not data and len(out) < PIECE:  # (a full piece may leave output pending)
            return
