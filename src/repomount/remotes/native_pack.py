"""A commit's blobs in packs: one `POST /v1/repos/{repo}/blobs` carries many of them as
a tar stream (docs/native-api.md), so a commit of two thousand new files costs a few
requests instead of one per file.

Which blob goes how is pure planning (`plan_uploads`); the body of a pack is built
lazily from the files on disk (`pack_body`), a factory giving a fresh stream per
attempt, so a retry reads the files again and memory stays bounded by one read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from repomount import tarwrite
from repomount.remotes.errors import ProtocolError
from repomount.tarwrite import BLOCK, END_OF_ARCHIVE

PACK_MAX = 64 << 20  # bytes of tar per pack
ALONE_MIN = 16 << 20  # a file bigger than this goes in its own PUT: a pack adds nothing
READ_TOGETHER = 1 << 20  # small files of a pack are read this much per worker-thread call
SMALL = 256 << 10  # ... files up to this size; bigger ones are streamed in chunks
CHUNK = 256 << 10


@dataclass(frozen=True)
class Blob:
    sha256: str
    source: Path  # a file holding exactly `size` bytes whose SHA-256 is `sha256`
    size: int


def member_length(size: int) -> int:
    """Bytes a member of `size` bytes of content takes in a pack: header, content, padding."""
    return BLOCK + size + len(tarwrite.padding(size))  # (one header block: a hash fits)


def pack_length(blobs: Sequence[Blob]) -> int:
    return sum(member_length(b.size) for b in blobs) + len(END_OF_ARCHIVE)


def plan_uploads(
    blobs: Sequence[Blob], *, pack_max: int = PACK_MAX, alone_min: int = ALONE_MIN
) -> tuple[list[Blob], list[list[Blob]]]:
    """(blobs to upload on their own, packs), in the given order. Big files go alone;
    the others fill packs of at most `pack_max` bytes (a file alone bigger than that
    still makes a pack of its own). A single small blob goes alone too: a pack of
    one is no cheaper than a PUT, and every server has the PUT."""
    alone = [b for b in blobs if b.size > alone_min]
    rest = [b for b in blobs if b.size <= alone_min]
    if len(rest) == 1:
        return alone + rest, []
    packs: list[list[Blob]] = []
    used = 0
    for blob in rest:
        size = member_length(blob.size)
        if not packs or used + size + len(END_OF_ARCHIVE) > pack_max:
            packs.append([])
            used = 0
        packs[-1].append(blob)
        used += size
    return alone, packs


def member_header(blob: Blob) -> bytes:
    return tarwrite.member_header(blob.sha256, blob.size)


def pack_body(blobs: Sequence[Blob]) -> Callable[[], AsyncIterator[bytes]]:
    """The pack's tar stream; a factory, so each attempt reads the files afresh. Small
    files are read several at a time in one worker-thread call, big ones in chunks."""
    members = list(blobs)

    async def stream() -> AsyncIterator[bytes]:
        i = 0
        while i < len(members):
            if members[i].size > SMALL:
                async for data in _streamed(members[i]):
                    yield data
                i += 1
                continue
            group = [members[i]]
            total = members[i].size
            i += 1
            while i < len(members) and members[i].size <= SMALL and total < READ_TOGETHER:
                group.append(members[i])
                total += members[i].size
                i += 1
            yield await trio.to_thread.run_sync(_read_members, group)
        yield END_OF_ARCHIVE

    return stream


async def _streamed(blob: Blob) -> AsyncIterator[bytes]:
    yield member_header(blob)
    left = blob.size
    async with await trio.open_file(blob.source, "rb") as f:
        while left > 0:
            data = await f.read(min(CHUNK, left))
            if not data:
                raise _short(blob)
            left -= len(data)
            yield data
    yield tarwrite.padding(blob.size)


def _read_members(group: Sequence[Blob]) -> bytes:
    """Header, content and padding of each of these small files, read in one go."""
    parts = []
    for blob in group:
        with blob.source.open("rb") as f:
            data = f.read(blob.size)
        if len(data) < blob.size:
            raise _short(blob)
        parts += [member_header(blob), data, tarwrite.padding(blob.size)]
    return b"".join(parts)


def _short(blob: Blob) -> ProtocolError:
    return ProtocolError(f"{blob.source} holds fewer than the {blob.size} bytes of its content")
