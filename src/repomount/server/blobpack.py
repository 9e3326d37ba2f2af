"""POST /v1/repos/{repo}/blobs: many blobs in one request, as a tar stream ("a pack").

Each member is named by the SHA-256 of its content. The body is read as it arrives,
never whole: a member goes into a spool file (buffered up to its size, so a small one
costs one write; closed once filled: no descriptor held) while its hash is computed. A
member already stored, or repeated in the pack, is consumed and skipped. The first
member whose content does not match its name stops the request (400 `hash_mismatch`);
members before it are stored all the same, which is harmless: blobs are
content-addressed.

Spooled members are moved into the blob store in groups (GROUP_MEMBERS members or
GROUP_BYTES bytes, and the rest at the end) by one Store.add_blobs each, in a worker
thread: a group of new blobs costs two syncfs of the store's filesystem (its files'
data before they are renamed into place, the renames after), not an fsync or two per
member, so a blob path never holds less than its whole content, even after a crash or
power loss. One group is being stored while the next one is read; the answer waits for
the last. Memory stays bounded (a group is a list of file names), and so does the disk
the spools take (two groups at most).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

import trio
from starlette.requests import Request

from repomount.paths import shown
from repomount.server.backend import Backend
from repomount.server.blobs import SHA256_RE
from repomount.server.body import body_chunks, check_declared_length, too_large
from repomount.server.errors import ApiError
from repomount.server.store import BlobSpool
from repomount.tarread import Member, TarError, TarReader, read_trailer

CHUNK = 1 << 18
GROUP_MEMBERS = 256  # spooled members moved into the store together
GROUP_BYTES = 32 << 20  # or fewer, once they hold this much content


@dataclass
class PackResult:
    stored: int = 0  # members new to the store
    present: int = 0  # members it had already


async def receive_pack(backend: Backend, request: Request) -> PackResult:
    """Store every member of the request's tar body; refuse the whole body beyond
    `max_pack_size` (413, at once when Content-Length says so, else as soon as the
    stream passes it) and any member beyond `max_file_size`."""
    limit = backend.options.max_pack_size
    check_declared_length(request, limit)
    pack = _Pack(backend, TarReader(_bounded(body_chunks(request), limit)))
    try:
        async with trio.open_nursery() as nursery:
            pack.nursery = nursery
            try:
                await pack.receive()
            except Exception as error:  # refused: the members received whole are stored
                pack.failed.append(error)
            await pack.send_group()
    finally:
        pack.discard_group()  # cancelled (or a group failed) before it was sent
    if pack.failed:
        raise pack.failed[0]
    return pack.result


class _Pack:
    def __init__(self, backend: Backend, reader: TarReader) -> None:
        self.backend = backend
        self.reader = reader
        self.result = PackResult()
        self.storing = trio.Semaphore(1)  # one group in the store's hands at a time
        self.failed: list[Exception] = []
        self.nursery: trio.Nursery | None = None
        self.seen: set[str] = set()  # members of this pack so far (some not stored yet)
        self.group: list[BlobSpool] = []  # spooled, not yet sent to the store
        self.group_bytes = 0

    async def receive(self) -> None:
        store = self.backend.store
        try:
            while (member := await self.reader.next()) is not None:
                sha = _check_member(member, self.backend.options.max_file_size)
                # A utime of one path, cheap as the spool's open that runs here too;
                # a worker-thread hop per member would cost more than the check.
                if sha in self.seen or store.has_blob(sha):
                    async for _ in self.reader.chunks(CHUNK):  # consumed, not kept
                        pass
                    self.result.present += 1
                    continue
                self.seen.add(sha)
                spool = await _spool_member(self.backend, self.reader, member)
                self.group.append(spool)
                self.group_bytes += spool.size
                if len(self.group) >= GROUP_MEMBERS or self.group_bytes >= GROUP_BYTES:
                    await self.send_group()
            # (the body read to its end: the connection carries the client's next
            # request; no 408 after BODY_IDLE for a pack whose blobs are all stored)
            await read_trailer(self.reader)
        except TarError as error:
            raise ApiError("bad_tar", f"the body is not a valid tar stream: {error}") from None

    async def send_group(self) -> None:
        """Hand the spooled members to a worker thread, once the previous group is in."""
        if not self.group:
            return
        await self.storing.acquire()  # released once that group is stored (or failed)
        group, self.group, self.group_bytes = self.group, [], 0
        assert self.nursery is not None
        self.nursery.start_soon(self._store, group)

    def discard_group(self) -> None:
        for spool in self.group:
            self.backend.store.discard_spool(spool)
        self.group, self.group_bytes = [], 0

    async def _store(self, group: list[BlobSpool]) -> None:
        store = self.backend.store
        try:
            added = await self.backend.run(store.add_blobs, group)
        except BaseException as error:  # (Cancelled only before the thread started)
            for spool in group:  # those not moved in yet
                store.discard_spool(spool)
            if isinstance(error, Exception):
                self.failed.append(error)
                assert self.nursery is not None
                self.nursery.cancel_scope.cancel()  # stop reading: the answer is an error
                return
            raise
        finally:
            self.storing.release()
        new = sum(added)
        self.result.stored += new
        self.result.present += len(added) - new  # stored meanwhile by another request


def _check_member(member: Member, max_size: int) -> str:
    if not member.is_file:
        raise ApiError(
            "invalid_request",
            f"member {shown(member.name)} is not a regular file (type {member.type!r})",
            member=member.name,
        )
    if not SHA256_RE.fullmatch(member.name):
        raise ApiError(
            "invalid_request",
            f"member {shown(member.name)} is not named by a lowercase hex SHA-256",
            member=member.name,
        )
    if member.size > max_size:
        error = too_large(max_size)
        error.message = f"member {member.name}: {member.size} bytes, more than the limit"
        error.details["member"] = member.name
        raise error
    return member.name


async def _spool_member(backend: Backend, reader: TarReader, member: Member) -> BlobSpool:
    """The member's content in a closed spool file, its hash checked (400
    hash_mismatch)."""
    sha = member.name
    spool = backend.store.new_spool(member.size)
    try:
        async for chunk in reader.chunks(CHUNK):
            spool.write(chunk)
        if spool.sha256 != sha:
            raise ApiError(
                "hash_mismatch",
                f"member {sha}: the content's SHA-256 is {spool.sha256}",
                member=sha,
                expected=sha,
                actual=spool.sha256,
            )
        spool.close()
    except BaseException:
        backend.store.discard_spool(spool)
        raise
    return spool


async def _bounded(stream: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    """The body's chunks; 413 as soon as they pass `limit` bytes in all."""
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        yield chunk
