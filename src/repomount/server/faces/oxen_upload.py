"""An Oxen workspace upload's file parts stored as blobs, gzip parts inflated as they go.

Oxen's client sends each file gzipped, and a gzip part of 1 MiB can unpack to a GiB.
A part is inflated in pieces of at most PIECE bytes straight into its blob's spool
file, hashed as it goes (SHA-256 by the spool, xxh3 here for Oxen), never held whole:
what a request holds stays about its body, however many run at once. Before, each part
was inflated into memory and copied (8 requests at once took 3.7 GB). A content that
fits in one piece is spooled with its size known, so a small one still becomes a row of
the database (inline.py). Runs in a worker thread: inflating and writing block.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator

import xxhash

from repomount.server.faces.oxen_model import OxenError, bad_request
from repomount.server.inline import store_in_groups
from repomount.server.multipart import Part
from repomount.server.store import BlobSpool, Store

PIECE = 256 << 10  # of inflated content in memory at a time


def gzipped(content_type: str) -> bool:
    return content_type in ("application/gzip", "application/x-gzip")


def store_parts(store: Store, parts: list[Part], limit: int, budget: int) -> list[tuple[str, str]]:
    """Store each part's content (inflated when gzipped) as a blob: (SHA-256, xxh3) of
    each. A gzip part is refused (413) once it unpacks past `limit`, or past what is
    left of `budget`, the bytes all of them may unpack to."""
    hashes: list[tuple[str, str]] = []

    def spools() -> Iterator[BlobSpool]:
        nonlocal budget
        for part in parts:
            if gzipped(part.content_type):
                pieces = inflated(part.data, max(0, min(limit, budget)))
            else:
                pieces = iter([part.data])
            spool, xxh3 = _spooled(store, pieces)
            hashes.append((spool.sha256, xxh3))
            budget -= spool.size
            yield spool

    store_in_groups(store, spools())  # (the spools on disk stay bounded)
    return hashes


def _spooled(store: Store, pieces: Iterator[bytes]) -> tuple[BlobSpool, str]:
    """A closed spool of the pieces' content, and its xxh3."""
    head = list(itertools.islice(pieces, 2))  # one piece: its size is known
    spool = store.new_spool(sum(map(len, head)) if len(head) < 2 else None)
    digest = xxhash.xxh3_128()
    try:
        for piece in itertools.chain(head, pieces):
            spool.write(piece)
            digest.update(piece)
        spool.close()  # (no descriptor held while the rest are spooled)
    except BaseException:
        store.discard_spool(spool)
        raise
    return spool, format(digest.intdigest(), "x")


def inflated(data: bytes, limit: int) -> Iterator[bytes]:
    """The content of a gzip part (every member of it), in pieces of at most PIECE
    bytes; 413 once past `limit` bytes in all, 400 when it is not gzip."""
    total = 0
    rest = data
    try:
        while rest:
            member = zlib.decompressobj(wbits=31)  # (a gzip header and trailer)
            while not member.eof:
                piece = member.decompress(rest, PIECE)
                rest = member.unconsumed_tail
                if not piece and not rest and not member.eof:
                    raise EOFError("the gzip stream ends early")
                total += len(piece)
                if total > limit:
                    raise unpacks_too_far(limit)
                if piece:
                    yield piece
            rest = member.unused_data
    except (EOFError, zlib.error) as e:
        raise bad_request("A gzip part is not gzip", str(e)) from None


def unpacks_too_far(limit: int) -> OxenError:
    return OxenError(413, "bad_request", f"a gzip part unpacks to over {limit} bytes")
