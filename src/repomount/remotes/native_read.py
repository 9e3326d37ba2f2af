"""Receiving a bulk read (POST /read): a tar stream of whole files, each checked
against its version (the SHA-256 of its content) before it is delivered.

Small files are gathered, and a batch of them is written to disk and checked in one
worker-thread call: making, writing and hashing two thousand small files one by one on
the trio thread took half of its time during a cold `tar c`, in the same thread that
answers the FUSE requests of the `tar` waiting for them. A large file streams to its
own file as it arrives.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from repomount.remotes.base import Fetched, ProtocolError
from repomount.remotes.httpremote import CHUNK
from repomount.tarread import Member, TarReader

SMALL = 256 << 10  # a file up to this size is gathered into a batch ...
BATCH_BYTES = 2 << 20  # ... written once the batch holds this much ...
BATCH_FILES = 128  # ... or this many files

NewFile = Callable[[], Path]
Got = Callable[[str, Fetched, Path], None]


@dataclass
class _Small:
    name: str
    version: str
    data: bytes


class Receiver:
    """The files of one bulk read's stream, into `new_file()`s, each handed to `got`
    once its content is checked. `new_file` is called in a worker thread for small
    files."""

    def __init__(self, new_file: NewFile, got: Got) -> None:
        self.new_file = new_file
        self.got = got
        self._batch: list[_Small] = []
        self._bytes = 0

    async def __aenter__(self) -> Receiver:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """The files gathered are delivered at the end of the stream, and also when
        it fails: what came whole before a failure stays delivered (the failure, not
        a second one on the way, is what the caller sees)."""
        if kind is None:
            await self.flush()
            return
        with contextlib.suppress(Exception):
            await self.flush()

    async def member(self, reader: TarReader, member: Member, version: str) -> None:
        """The current member of `reader`: received now, or gathered."""
        if member.size > SMALL:
            await self.flush()  # (delivered in the order they came)
            dest = self.new_file()
            self.got(member.name, await _receive(reader, member, version, dest), dest)
            return
        data = b"".join([chunk async for chunk in reader.chunks(CHUNK)])
        self._batch.append(_Small(member.name, version, data))
        self._bytes += len(data)
        if self._bytes >= BATCH_BYTES or len(self._batch) >= BATCH_FILES:
            await self.flush()

    async def flush(self) -> None:
        """Write and deliver the files gathered; the first that is not its version
        stops the rest (those before it are delivered) and is raised."""
        batch, self._batch, self._bytes = self._batch, [], 0
        if not batch:
            return
        written, error = await trio.to_thread.run_sync(_write, batch, self.new_file)
        for small, dest in written:
            size = len(small.data)
            self.got(small.name, Fetched(small.version, size, size), dest)
        if error is not None:
            raise error


Written = list[tuple[_Small, Path]]


def _write(batch: list[_Small], new_file: NewFile) -> tuple[Written, Exception | None]:
    """Worker thread: each file checked, then written to a new file; stops at the
    first failure (its file removed), which is returned, not raised, so the files
    written before it are still delivered."""
    written: Written = []
    for small in batch:
        digest = hashlib.sha256(small.data).hexdigest()
        if digest != small.version:
            return written, _mismatch(small.name, digest, small.version)
        dest = new_file()
        try:
            dest.write_bytes(small.data)
        except BaseException as e:
            dest.unlink(missing_ok=True)
            if isinstance(e, Exception):
                return written, e
            raise
        written.append((small, dest))
    return written, None


async def _receive(reader: TarReader, member: Member, version: str, dest: Path) -> Fetched:
    """The member's content into `dest` as it arrives, checked against its version;
    on any failure `dest` is removed and nothing is delivered."""
    digest = hashlib.sha256()
    try:
        with dest.open("wb") as out:
            async for chunk in reader.chunks(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != version:
            raise _mismatch(member.name, digest.hexdigest(), version)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return Fetched(version, member.size, member.size)


def _mismatch(name: str, got: str, version: str) -> ProtocolError:
    return ProtocolError(
        f"content of {name!r} does not match its version: "
        f"got sha256 {got}, the server says {version}"
    )
