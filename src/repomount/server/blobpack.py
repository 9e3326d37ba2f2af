"""POST /v1/repos/{repo}/blobs: many blobs in one request, as a tar stream ("a pack").

Each member is named by the SHA-256 of its content. The body is read as it arrives,
never whole: a member goes into a spool file while its hash is computed, then into the
blob store exactly as a single `PUT /blobs/{sha256}` (Store.add_blob: fsynced, renamed
into place). A member already stored is consumed and skipped. The first member whose
content does not match its name stops the request (400 `hash_mismatch`); members before
it stay stored, which is harmless: blobs are content-addressed.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request

from repomount.server.backend import Backend
from repomount.server.blobs import SHA256_RE
from repomount.server.body import check_declared_length, too_large
from repomount.server.errors import ApiError
from repomount.tarread import Member, TarError, TarReader

CHUNK = 1 << 18


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
    reader = TarReader(_bounded(request.stream(), limit))
    result = PackResult()
    try:
        while (member := await reader.next()) is not None:
            sha = _check_member(member, backend.options.max_file_size)
            if await backend.run(backend.store.has_blob, sha):
                async for _ in reader.chunks(CHUNK):  # consumed, not kept
                    pass
                result.present += 1
            elif await _store_member(backend, reader, sha):
                result.stored += 1
            else:  # stored meanwhile by another request
                result.present += 1
    except TarError as error:
        raise ApiError("bad_tar", f"the body is not a valid tar stream: {error}") from None
    return result


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


async def _store_member(backend: Backend, reader: TarReader, sha: str) -> bool:
    """Spool the member's content, check its hash, move it into the store; True when
    the blob was new."""
    store = backend.store
    spool = store.new_spool()
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
        return await backend.run(store.add_blob, spool)
    except BaseException:
        store.discard_spool(spool)  # a no-op once add_blob has moved it in
        raise


async def _bounded(stream: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    """The body's chunks; 413 as soon as they pass `limit` bytes in all."""
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        yield chunk
