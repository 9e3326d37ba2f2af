"""POST /v1/repos/{repo}/blobs: many blobs in one request, as a tar stream ("a pack").

Each member is named by the SHA-256 of its content. The body is read as it arrives,
never whole: a member goes into a spool file while its hash is computed, then into the
blob store exactly as a single `PUT /blobs/{sha256}` (Store.add_blob: fsynced, renamed
into place). A member already stored is consumed and skipped. The first member whose
content does not match its name stops the request (400 `hash_mismatch`); members before
it stay stored, which is harmless: blobs are content-addressed.

Making a blob durable (fsync, rename, fsync of its directory) takes a worker thread a
few milliseconds: up to STORE_AT_ONCE members are being stored while the next ones
arrive, so a pack of two thousand small files is not two thousand fsyncs in a row. The
answer waits for all of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

import trio
from starlette.requests import Request

from repomount.server.backend import Backend
from repomount.server.blobs import SHA256_RE
from repomount.server.body import check_declared_length, too_large
from repomount.server.errors import ApiError
from repomount.server.store import BlobSpool
from repomount.tarread import Member, TarError, TarReader

CHUNK = 1 << 18
STORE_AT_ONCE = 8  # members being made durable in worker threads at the same time


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
    pack = _Pack(backend, TarReader(_bounded(request.stream(), limit)))
    async with trio.open_nursery() as nursery:
        pack.nursery = nursery
        try:
            await pack.receive()
        except Exception as error:  # refused: the members being stored still finish
            pack.failed.append(error)
    if pack.failed:
        raise pack.failed[0]
    return pack.result


class _Pack:
    def __init__(self, backend: Backend, reader: TarReader) -> None:
        self.backend = backend
        self.reader = reader
        self.result = PackResult()
        self.slots = trio.Semaphore(STORE_AT_ONCE)
        self.failed: list[Exception] = []
        self.nursery: trio.Nursery | None = None
        self.seen: set[str] = set()  # members of this pack so far (some still being stored)

    async def receive(self) -> None:
        assert self.nursery is not None
        store = self.backend.store
        try:
            while (member := await self.reader.next()) is not None:
                sha = _check_member(member, self.backend.options.max_file_size)
                # A stat of one path, cheap as the spool's mkstemp that runs here too;
                # a worker-thread hop per member would cost more than the check.
                if sha in self.seen or store.has_blob(sha):
                    async for _ in self.reader.chunks(CHUNK):  # consumed, not kept
                        pass
                    self.result.present += 1
                    continue
                self.seen.add(sha)
                await self.slots.acquire()  # released once it is stored (or refused)
                try:
                    spool = await _spool_member(self.backend, self.reader, sha)
                except BaseException:
                    self.slots.release()
                    raise
                self.nursery.start_soon(self._store, spool)
        except TarError as error:
            raise ApiError("bad_tar", f"the body is not a valid tar stream: {error}") from None

    async def _store(self, spool: BlobSpool) -> None:
        store = self.backend.store
        try:
            new = await self.backend.run(store.add_blob, spool)
        except Exception as error:
            store.discard_spool(spool)
            self.failed.append(error)
            assert self.nursery is not None
            self.nursery.cancel_scope.cancel()  # stop reading: the answer is an error
            return
        finally:
            self.slots.release()
        if new:
            self.result.stored += 1
        else:  # stored meanwhile by another request
            self.result.present += 1


def _check_member(member: Member, max_size: int) -> str:
    if not member.is_file:
        raise ApiError(
            "invalid_request",
            f"member {member.name!r} is not a regular file (type {member.type!r})",
            member=member.name,
        )
    if not SHA256_RE.fullmatch(member.name):
        raise ApiError(
            "invalid_request",
            f"member {member.name!r} is not named by a lowercase hex SHA-256",
            member=member.name,
        )
    if member.size > max_size:
        error = too_large(max_size)
        error.message = f"member {member.name}: {member.size} bytes, more than the limit"
        error.details["member"] = member.name
        raise error
    return member.name


async def _spool_member(backend: Backend, reader: TarReader, sha: str) -> BlobSpool:
    """The member's content in a spool file, its hash checked (400 hash_mismatch)."""
    spool = backend.store.new_spool()
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
