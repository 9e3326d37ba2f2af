"""Packing a commit's blobs (remotes/native_pack.py): which blob goes how, and the tar
stream of a pack, read back by Python's tarfile. Local files only, no server."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from repomount.remotes.errors import ProtocolError
from repomount.remotes.native_pack import (
    Blob,
    member_length,
    pack_body,
    pack_length,
    plan_uploads,
)
from support.util import sha


def blob(tmp_path: Path, data: bytes) -> Blob:
    path = tmp_path / sha(data)
    path.write_bytes(data)
    return Blob(sha(data), path, len(data))


def fake(size: int, name: str = "x") -> Blob:
    return Blob(name * 64, Path("/nonexistent"), size)


def test_big_files_go_alone_the_rest_in_packs_in_order() -> None:
    blobs = [fake(100, "a"), fake(50_000, "b"), fake(100, "c"), fake(100, "d")]
    alone, packs = plan_uploads(blobs, pack_max=3 * 1024, alone_min=10_000)
    assert alone == [blobs[1]]
    # 100 bytes take 1 KiB as a member; with the 1 KiB end, two fit in 3 KiB.
    assert packs == [[blobs[0], blobs[2]], [blobs[3]]]
    assert all(pack_length(p) <= 3 * 1024 for p in packs)


def test_one_small_blob_goes_alone_and_an_oversized_one_gets_its_own_pack() -> None:
    assert plan_uploads([fake(10)], pack_max=4096) == ([fake(10)], [])
    small, huge = fake(10, "s"), fake(9000, "h")
    assert plan_uploads([small, huge], pack_max=4096, alone_min=10_000) == (
        [],
        [[small], [huge]],
    )
    assert plan_uploads([]) == ([], [])


def test_member_length() -> None:
    assert [member_length(n) for n in (0, 1, 512, 513)] == [512, 1024, 1024, 1536]


async def read_stream(blobs: list[Blob]) -> bytes:
    return b"".join([chunk async for chunk in pack_body(blobs)()])


async def test_a_pack_is_a_tar_of_members_named_by_their_hash(tmp_path: Path) -> None:
    contents = [b"", b"small", b"x" * 512, b"y" * 300_000, b"z" * 1000]  # one streamed
    blobs = [blob(tmp_path, c) for c in contents]
    data = await read_stream(blobs)
    assert len(data) == pack_length(blobs)
    assert data == await read_stream(blobs)  # a retry sends the same bytes again
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    assert members == [(sha(c), c) for c in contents]


async def test_a_file_shorter_than_its_size_is_refused(tmp_path: Path) -> None:
    for size in (10, 400_000):  # read in a group, and streamed
        short = blob(tmp_path, b"q" * size)
        grown = Blob(short.sha256, short.source, size + 1)
        with pytest.raises(ProtocolError, match="fewer than"):
            await read_stream([grown])
