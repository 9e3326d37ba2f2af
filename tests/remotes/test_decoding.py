"""Compressed answers (remotes/decoding.py): gzip and deflate decoded in bounded pieces,
any other encoding refused, and only those two asked for. A MockTransport stands in for
the server: these are decisions about bytes, not about the network."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from repomount.remotes.decoding import PIECE
from repomount.remotes.errors import ProtocolError
from repomount.remotes.http import HttpClient

BODY = b'{"entries": []}' * 1000


class _Body(httpx.AsyncByteStream):
    """The body as a network gives it, 64 KiB reads (bytes content would have httpx
    read and decode the whole response at once, before the client sees it)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.body), 1 << 16):
            yield self.body[i : i + (1 << 16)]


def _server(body: bytes, encoding: str | None, seen: list[httpx.Request]) -> HttpClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"Content-Encoding": encoding} if encoding else {}
        return httpx.Response(200, stream=_Body(body), headers=headers)

    return HttpClient("http://remote.test", name="test", transport=httpx.MockTransport(answer))


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


# (Named, and gzip'd with a fixed time: test ids made of the bytes would differ between
# xdist workers that collect in different seconds, which xdist refuses.)
@pytest.mark.parametrize(
    ("encoding", "encoded"),
    [
        pytest.param(None, BODY, id="plain"),
        pytest.param("identity", BODY, id="identity"),
        pytest.param("gzip", gzip.compress(BODY, mtime=0), id="gzip"),
        pytest.param("x-gzip", gzip.compress(BODY, mtime=0), id="x-gzip"),
        pytest.param("deflate", zlib.compress(BODY), id="deflate-zlib"),
        pytest.param("deflate", _raw_deflate(BODY), id="deflate-raw"),  # (some servers)
    ],
)
async def test_plain_and_compressed_answers_read_the_same(
    encoding: str | None, encoded: bytes
) -> None:
    seen: list[httpx.Request] = []
    async with _server(encoded, encoding, seen) as c:
        r = await c.request("GET", "/v1/x")
    assert r.content == BODY
    assert seen[0].headers["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize("encoding", ["zstd", "br", "compress", "gzip, gzip"])
async def test_an_encoding_not_asked_for_is_refused(encoding: str) -> None:
    async with _server(b"\x28\xb5\x2f\xfd whatever", encoding, []) as c:
        with pytest.raises(ProtocolError, match="was not asked for"):
            await c.request("GET", "/v1/x")


async def test_a_compression_bomb_decodes_a_piece_at_a_time() -> None:
    """256 MiB of zeros in about 256 KiB of gzip: decoded in pieces of at most PIECE
    bytes as they are read, and the answer cap stops it long before the end (httpx
    alone decodes each network read whole)."""
    bomb = gzip.compress(bytes(256 << 20), compresslevel=9)
    assert len(bomb) < 1 << 20
    largest = 0
    async with _server(bomb, "gzip", []) as c:
        async with c.stream("GET", "/v1/x") as r:
            async for piece in r.aiter_bytes():
                largest = max(largest, len(piece))
                if largest > PIECE:
                    break
        assert largest == PIECE
        with pytest.raises(ProtocolError, match="larger than"):
            await c.request("GET", "/v1/x", max_body=8 << 20)


async def test_a_broken_or_cut_gzip_answer_is_an_error() -> None:
    whole = gzip.compress(BODY)
    for bad in (b"not gzip at all", whole[: len(whole) // 2]):
        async with _server(bad, "gzip", []) as c:
            with pytest.raises(ProtocolError, match=r"encoding is broken|ended early"):
                await c.request("GET", "/v1/x")
