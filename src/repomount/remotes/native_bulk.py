"""A bulk read's answer (`POST /read`, a tar stream) into files for the cache.

Each member is checked against the version the server names for it (a pax record)
before it is delivered. Small files are checked in memory and written out together by
a worker thread (a cold `tar` of 2,000 files made 2,000 files and writes on the trio
thread, which serves FUSE too), up to HELD_MAX at a time and before each wait for the
stream, so that a program waiting for one of them never waits for the files after it;
what arrived is delivered even when the stream then fails. A member far larger than
its listing said is refused at its header.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, Callable, Mapping
from pathlib import Path

import trio

from repomount.remotes.base import Fetched, ProtocolError
from repomount.remotes.downloads import allowed, too_long
from repomount.remotes.httpremote import CHUNK
from repomount.tarread import Member, TarError, TarReader, read_trailer
from repomount.tarwrite import VERSION_KEY

HELD_MAX = 1 << 20  # bytes of small files held in memory before they are written
THREAD_FROM = 8  # files written at once by a worker thread, fewer right here


async def read_tar(
    stream: AsyncIterable[bytes],
    what: str,
    wanted: set[str],
    sizes: Mapping[str, int],
    new_file: Callable[[], Path],
    got: Callable[[str, Fetched, Path], None],
) -> None:
    """Deliver each file of the tar `stream` (see Remote.read_many); `what` names the
    request in errors."""
    held: list[tuple[str, str, bytes]] = []  # (path, version, checked content)
    held_bytes = 0

    async def deliver() -> None:
        nonlocal held_bytes
        batch = held.copy()  # (taken first: a failure in here never delivers twice)
        held.clear()
        held_bytes = 0
        if not batch:
            return
        files = [new_file() for _ in batch]
        contents = [data for _, _, data in batch]
        if len(batch) < THREAD_FROM:  # (a hop to a thread and back costs more)
            _write_files(contents, files)
        else:
            await trio.to_thread.run_sync(_write_files, contents, files)
        for (name, version, data), file in zip(batch, files, strict=True):
            got(name, Fetched(version, len(data), len(data)), file)

    # (as it arrives, not in 256 KiB lumps; never waited on with files in hand)
    reader = TarReader(stream, before_waiting=deliver)
    try:
        while (member := await reader.next()) is not None:
            version = member.pax.get(VERSION_KEY)
            if not member.is_file or version is None:
                continue  # a symlink, or the closing list of MISSING paths
            if member.name not in wanted:
                raise ProtocolError(f"{what}: sent {member.name!r}, not asked for")
            listed = sizes.get(member.name)
            if listed is not None and member.size > allowed(listed):
                raise too_long(f"{what}: {member.name!r}", listed)
            if member.size <= HELD_MAX:
                held.append((member.name, version, await _take(reader, member, version)))
                held_bytes += member.size
                if held_bytes >= HELD_MAX:
                    await deliver()
                continue
            dest = new_file()
            fetched = await _receive(reader, member, version, dest)
            got(member.name, fetched, dest)
    except Exception as exc:
        with trio.CancelScope(shield=True):  # (checked already: kept)
            await deliver()
        if isinstance(exc, TarError):
            raise ProtocolError(f"{what}: {exc}") from exc
        raise
    await deliver()
    await read_trailer(reader)  # (read to its end, the answer's connection serves the next)


async def _take(reader: TarReader, member: Member, version: str) -> bytes:
    """The member's (small) content, checked against its version."""
    data = b"".join([chunk async for chunk in reader.chunks(CHUNK)])
    _check(member.name, hashlib.sha256(data).hexdigest(), version)
    return data


def _write_files(contents: list[bytes], files: list[Path]) -> None:
    """Each content into its new file (worker thread); on a failure none stays."""
    try:
        for data, file in zip(contents, files, strict=True):
            with file.open("wb") as out:
                out.write(data)
    except BaseException:
        for file in files:
            file.unlink(missing_ok=True)
        raise


def _check(name: str, got: str, version: str) -> None:
    if got != version:
        raise ProtocolError(
            f"content of {name!r} does not match its version: "
            f"got sha256 {got}, the server says {version}"
        )


async def _receive(reader: TarReader, member: Member, version: str, dest: Path) -> Fetched:
    """The member's content into `dest`, checked against its version; on any failure
    `dest` is removed and nothing is delivered."""
    digest = hashlib.sha256()
    try:
        with dest.open("wb") as out:
            async for chunk in reader.chunks(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        _check(member.name, digest.hexdigest(), version)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return Fetched(version, member.size, member.size)
