"""Writing native answers (docs/native-api.md): JSON bodies with their X-Repo-Head, the
error shape, tree pages around the entries SQLite wrote as JSON, and content streamed
from blob files: one file's bytes, or a tar of many files for POST /read. The handlers
in native.py decide what to answer; this module decides how it looks on the wire.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, BinaryIO

import trio
from starlette.responses import Response

from repomount import tarwrite
from repomount.server.backend import Backend
from repomount.server.errors import ApiError, status_of
from repomount.server.jsonresponse import JSONResponse
from repomount.server.store import Conflict, Entry, JsonPage, StoreError

OCTET = "application/octet-stream"
CHUNK = 256 << 10  # a bulk read's members up to this are framed in groups
# A file is sent in pieces of this size, each read in a worker thread: with 256 KiB the
# thread hops (one per piece) held httpx's download of 256 MiB to 0.35-0.51 s on
# loopback, with 1 MiB 0.29-0.32 s. One piece is held per answer being sent.
STREAM_CHUNK = 1 << 20


def json_response(
    data: Any, status: int = 200, *, head: int | None = None, replayed: bool = False
) -> JSONResponse:
    """`replayed`: answered from an idempotency record (its head is the first answer's,
    maybe older than the repo's now: a client must not take it for the latest)."""
    headers = {} if head is None else {"X-Repo-Head": str(head)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(data, status_code=status, headers=headers or None)


def tree_response(page: JsonPage, next_cursor: str | None) -> Response:
    """`{head, entries, next_cursor}` around entries SQLite wrote as JSON already
    (server/sqlite_tree.py). The cursor goes in a header too: a client can ask for the
    next page while it decodes this one (remotes/native_pages.py)."""
    body = (
        f'{{"head":"{page.head}","entries":{page.entries},"next_cursor":{json.dumps(next_cursor)}}}'
    ).encode()
    headers = {"X-Repo-Head": str(page.head)}
    if next_cursor is not None:
        headers["X-Next-Cursor"] = next_cursor
    return Response(body, media_type="application/json", headers=headers)


def error_json(error: StoreError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message, **error.details}}
    return JSONResponse(body, status_code=status_of(error), headers=headers)


def native_bad_url(part: str, message: str) -> JSONResponse:
    """The 422 of a URL the server refuses to decode (server/urlguard.py)."""
    return error_json(ApiError("invalid_path" if part == "path" else "invalid_request", message))


def precondition_failed(path: str, conflict: Conflict) -> ApiError:
    """The 412 of a single-file PUT or DELETE whose precondition the store refused."""
    current = conflict.conflicts[0].current
    state = "absent" if current is None else f"at version {current}"
    return ApiError(
        "precondition_failed",
        f"precondition failed: {path!r} is {state}",
        current_version=current,
    )


async def stream_file(file: BinaryIO, start: int, end: int) -> AsyncIterator[bytes]:
    """Bytes [start, end) of `file`, read in worker threads; closes the file."""
    try:
        if start:
            await trio.to_thread.run_sync(file.seek, start)
        remaining = end - start
        while remaining > 0:
            chunk = await trio.to_thread.run_sync(file.read, min(STREAM_CHUNK, remaining))
            if not chunk:
                raise RuntimeError(f"blob {file.name} is shorter than recorded")
            remaining -= len(chunk)
            yield chunk
    finally:
        file.close()


GROUP_BYTES = 1 << 20  # small members read and sent together, in one thread call


async def stream_tar(
    backend: Backend, paths: Sequence[str], entries: Sequence[Entry | None]
) -> AsyncIterator[bytes]:
    """The tar answer of POST /read: a member per file or symlink found, in order, then
    the MISSING member listing the paths that are not (or are directories).

    Small members go in groups: each group is read and framed in one worker-thread call
    and sent as one chunk (a thread hop and a send per file made a batch of 256 small
    files take a second); a large one is streamed on its own."""
    missing: list[str] = []
    group: list[Entry] = []
    grouped = 0
    for path, entry in zip(paths, entries, strict=True):
        if entry is None or entry.type == "dir" or entry.version is None:
            missing.append(path)
            continue
        if entry.target is None and entry.size > CHUNK:
            if group:
                yield await backend.run(_framed, backend, group)
                group, grouped = [], 0
            yield _header(entry)
            blob = await backend.run(backend.store.open_blob, entry.version)
            async for chunk in stream_file(blob, 0, entry.size):
                yield chunk
            yield tarwrite.padding(entry.size)
            continue
        group.append(entry)
        grouped += entry.size
        if grouped >= GROUP_BYTES:
            yield await backend.run(_framed, backend, group)
            group, grouped = [], 0
    if group:
        yield await backend.run(_framed, backend, group)
    listing = json.dumps(missing).encode()
    yield tarwrite.member_header(tarwrite.MISSING_NAME, len(listing), mtime=0, mode=0o644)
    yield listing + tarwrite.padding(len(listing))
    yield tarwrite.END_OF_ARCHIVE


def _header(entry: Entry) -> bytes:
    assert entry.version is not None
    return tarwrite.member_header(
        entry.path,
        entry.size,
        mtime=entry.mtime,
        mode=entry.mode,
        pax={tarwrite.VERSION_KEY: entry.version},
    )


def _framed(backend: Backend, group: Sequence[Entry]) -> bytes:
    """Small members (files and symlinks), framed, as one chunk (worker thread)."""
    out: list[bytes] = []
    for entry in group:
        assert entry.version is not None
        if entry.target is not None:
            out.append(
                tarwrite.symlink_header(
                    entry.path,
                    entry.target,
                    mtime=entry.mtime,
                    mode=entry.mode,
                    pax={tarwrite.VERSION_KEY: entry.version},
                )
            )
            continue
        with backend.store.open_blob(entry.version) as blob:
            data = blob.read(entry.size + 1)
        if len(data) != entry.size:
            raise RuntimeError(f"blob {entry.version} is not {entry.size} bytes as recorded")
        out += [_header(entry), data, tarwrite.padding(entry.size)]
    return b"".join(out)
