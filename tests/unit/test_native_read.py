"""Receiving a bulk read (remotes/native_read.py): small files gathered and written in
batches in a worker thread, large ones streamed; every file checked against its version
before it is delivered, in the order the stream sent them; the first that is not its
version stops the rest, and leaves no file behind."""

from __future__ import annotations

import hashlib
import io
import itertools
import tarfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from repomount.remotes import native_read
from repomount.remotes.base import Fetched, ProtocolError
from repomount.remotes.native_read import Receiver
from repomount.tarread import TarReader


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_of(files: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def chunks(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    for pos in range(0, len(data), size):
        yield data[pos : pos + size]


async def receive(
    tmp_path: Path, files: list[tuple[str, bytes]], versions: dict[str, str]
) -> tuple[list[tuple[str, Fetched, bytes]], list[str]]:
    """Everything delivered (name, what, content), and where new files were made."""
    delivered: list[tuple[str, Fetched, bytes]] = []
    made: list[str] = []
    count = iter(range(10**6))

    def new_file() -> Path:
        made.append(threading.current_thread().name)
        return tmp_path / f"f{next(count)}"

    def got(name: str, fetched: Fetched, dest: Path) -> None:
        delivered.append((name, fetched, dest.read_bytes()))
        dest.unlink()

    reader = TarReader(chunks(tar_of(files)))
    async with Receiver(new_file, got) as receiver:
        while (member := await reader.next()) is not None:
            await receiver.member(reader, member, versions[member.name])
    return delivered, made


async def test_small_files_go_in_batches_written_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(native_read, "BATCH_FILES", 10)
    files = [(f"d/f{i}", f"content {i}".encode() * i) for i in range(25)]
    big = ("big", bytes(range(256)) * 4096)  # 1 MiB: streamed on its own
    files.insert(12, big)
    delivered, made = await receive(tmp_path, files, {n: sha(d) for n, d in files})
    assert [(n, c) for n, _, c in delivered] == files  # (in order, each whole)
    assert all(f == Fetched(sha(c), len(c), len(c)) for _, f, c in delivered)
    main = threading.main_thread().name
    assert made.count(main) == 1  # the big one; the 25 small ones in worker threads
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [3, 12, 24])
async def test_a_file_not_its_version_stops_the_rest_and_leaves_no_file(
    tmp_path: Path, bad: int
) -> None:
    files = [(f"f{i}", f"content {i}".encode()) for i in range(25)]
    files[12] = ("f12", b"large " * 100_000)
    versions = {n: sha(d) for n, d in files}
    versions[f"f{bad}"] = sha(b"something else")
    with pytest.raises(ProtocolError, match=f"f{bad}"):
        await receive(tmp_path, files, versions)
    assert list(tmp_path.iterdir()) == []  # (delivered ones were taken by `got`)


async def test_what_came_before_a_bad_file_is_delivered(tmp_path: Path) -> None:
    files = [(f"f{i}", f"content {i}".encode()) for i in range(5)]
    versions = {n: sha(d) for n, d in files} | {"f3": sha(b"no")}
    delivered: list[str] = []
    names = itertools.count()
    reader = TarReader(chunks(tar_of(files)))
    with pytest.raises(ProtocolError):
        async with Receiver(
            lambda: tmp_path / f"x{next(names)}", lambda n, f, p: delivered.append(n)
        ) as receiver:
            while (member := await reader.next()) is not None:
                await receiver.member(reader, member, versions[member.name])
    assert delivered == ["f0", "f1", "f2"]


async def test_what_came_whole_before_the_stream_failed_is_delivered(tmp_path: Path) -> None:
    """The stream stops inside the fourth file: the three before it were only
    gathered, and are delivered all the same; the failure is what is raised."""
    files = [(f"f{i}", f"content {i}".encode() * 50) for i in range(6)]
    whole = tar_of(files)
    cut = whole.index(files[3][1])  # (inside the fourth one's content)

    async def cut_off() -> AsyncIterator[bytes]:
        async for chunk in chunks(whole[: cut + 10]):
            yield chunk
        raise ConnectionError("the stream stopped")

    delivered: list[str] = []
    names = itertools.count()
    reader = TarReader(cut_off())
    with pytest.raises(ConnectionError):
        async with Receiver(
            lambda: tmp_path / f"x{next(names)}", lambda n, f, p: delivered.append(n)
        ) as receiver:
            while (member := await reader.next()) is not None:
                await receiver.member(reader, member, sha(files[int(member.name[1:])][1]))
    assert delivered == ["f0", "f1", "f2"]
