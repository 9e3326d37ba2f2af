"""The Terminal Use face's archive routes: presigned upload and download URLs, the
presigned "bucket" itself (tar.zst archives stored as blobs), and `sync-complete`, which
makes a filesystem's tree exactly an uploaded archive's files (last writer wins).
Mounted with the rest of the face by terminaluse.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Generator

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from repomount.server import presign
from repomount.server.backend import Backend
from repomount.server.body import SMALL_JSON_BODY, read_body, read_json, spool_body
from repomount.server.faces import terminaluse_archive as archives
from repomount.server.faces import terminaluse_wire as wire
from repomount.server.jsonresponse import JSONResponse
from repomount.server.origin import origin
from repomount.server.store import Idempotency, IdempotencyConflict, NotFound, StaleBase

ATTR_SYNCS = "terminaluse.recent_sync_ids"  # JSON list, newest last
RECENT_SYNCS = 100
DEFAULT_EXPIRY, MIN_EXPIRY, MAX_EXPIRY = 3600, 60, 604800
SYNC_ATTEMPTS = 5
ZSTD = "application/zstd"


class ArchiveApi:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.store = backend.store

    @wire.endpoint
    async def upload_url(self, request: Request) -> Response:
        return await self._presigned(request, "PUT")

    @wire.endpoint
    async def download_url(self, request: Request) -> Response:
        return await self._presigned(request, "GET")

    async def _presigned(self, request: Request, method: str) -> Response:
        fs_id = request.path_params["filesystem_id"]
        await wire.filesystem_info(self.backend, fs_id)  # 404 before reading the body
        expiry = await self._expiry(request)
        expires = int(time.time()) + expiry
        # The full path as the presigned request will carry it (scope["path"]).
        path = f"{request.scope.get('root_path', '')}/archives/{fs_id}"
        query = presign.presigned_query(self.backend.options.token, method, path, expires)
        data = {
            "url": f"{origin(request)}{path}?{query}",
            "method": method,
            "expires_at": wire.iso(expires),
            "content_type": ZSTD if method == "PUT" else None,
            "instructions": (
                f"PUT the tar.zst archive to this URL with Content-Type: {ZSTD}, then call "
                "sync-complete with its sha256 checksum"
                if method == "PUT"
                else "GET this URL for the filesystem's tar.zst archive"
            ),
        }
        return JSONResponse(data)

    async def _expiry(self, request: Request) -> int:
        raw = await read_body(request, SMALL_JSON_BODY)  # 413 beyond it, never read whole
        if not raw.strip() or raw.strip() == b"null":
            return DEFAULT_EXPIRY
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise wire.ValidationError("body", "expiration_seconds", "body is not JSON") from None
        value = body.get("expiration_seconds", DEFAULT_EXPIRY) if isinstance(body, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise wire.ValidationError("body", "expiration_seconds", "must be an integer")
        if not MIN_EXPIRY <= value <= MAX_EXPIRY:
            raise wire.ValidationError(
                "body", "expiration_seconds", f"must be {MIN_EXPIRY} to {MAX_EXPIRY}"
            )
        return value

    def _check_signature(self, request: Request) -> None:
        """Again here: without a server token BearerAuth lets everything through."""
        scope = request.scope
        token = self.backend.options.token
        if not presign.verify(token, scope["method"], scope["path"], scope["query_string"]):
            raise wire.FaceError(403, "the presigned URL is invalid or has expired")

    @wire.endpoint
    async def put_archive(self, request: Request) -> Response:
        self._check_signature(request)
        await wire.filesystem_info(self.backend, request.path_params["filesystem_id"])
        spool = await spool_body(self.backend, request)  # checked at sync-complete
        try:
            await self.backend.run(self.store.add_blob, spool)
        except BaseException:
            self.store.discard_spool(spool)
            raise
        return Response(status_code=200)

    @wire.endpoint
    async def get_archive(self, request: Request) -> Response:
        self._check_signature(request)
        info = await wire.filesystem_info(self.backend, request.path_params["filesystem_id"])
        if info.head == 0:  # like the bucket: no object before the first write
            raise wire.FaceError(404, "no archive exists for this filesystem yet")
        chunks = archives.archive_chunks(self.store, info.name, info.head)
        return StreamingResponse(_in_thread(chunks), media_type=ZSTD)

    @wire.endpoint
    async def sync_complete(self, request: Request) -> Response:
        fs_id = request.path_params["filesystem_id"]
        info = await wire.filesystem_info(self.backend, fs_id)
        body = await read_json(self.backend, request)
        sync_id = wire.body_field(body, "sync_id", str)
        direction = wire.body_field(body, "direction", str)
        status = wire.body_field(body, "status", str)
        if direction not in ("UP", "DOWN"):
            raise wire.ValidationError("body", "direction", "must be UP or DOWN")
        if status not in ("SUCCESS", "FAILED"):
            raise wire.ValidationError("body", "status", "must be SUCCESS or FAILED")
        files = body.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise wire.ValidationError("body", "files", "must be a list of file objects")
        answer = {"filesystem_id": fs_id, "sync_id": sync_id, "files_count": len(files)}
        if direction == "DOWN" or status == "FAILED":
            return JSONResponse(answer | {"status": "COMPLETED"})  # nothing to apply
        checksum = body.get("archive_checksum")
        if not isinstance(checksum, str):
            raise wire.ValidationError("body", "archive_checksum", "required for a successful UP")
        sha = wire.norm(checksum)
        size = body.get("archive_size_bytes")
        unpacked = await self.backend.run(self._unpack, sha, size)
        await self.backend.run(wire.check_manifest, files, unpacked)
        state = await self.backend.run(self._apply_sync, info.name, sync_id, sha, unpacked)
        return JSONResponse(answer | {"files_count": len(unpacked), "status": state})

    def _unpack(self, sha: str, size: object) -> list[archives.ArchiveFile]:
        try:
            blob = self.store.open_blob(sha)
        except NotFound:
            raise wire.FaceError(
                400, f"no archive was uploaded with checksum sha256:{sha}"
            ) from None
        with blob:
            actual = blob.seek(0, 2)
            if size is not None and size != actual:
                raise wire.FaceError(400, f"archive_size_bytes is {size}, the archive has {actual}")
            blob.seek(0)
            try:
                return archives.unpack(self.store, blob, self.backend.options.max_file_size)
            except (archives.UnwritableName, archives.TooManyFiles) as error:
                raise wire.ValidationError("body", "archive", str(error)) from None
            except archives.TooLargeUnpacked as error:
                raise wire.FaceError(413, str(error)) from None
            except archives.BadArchive as error:
                raise wire.FaceError(400, str(error)) from None

    def _apply_sync(
        self, fs_id: str, sync_id: str, sha: str, files: list[archives.ArchiveFile]
    ) -> str:
        """Make the tree exactly the archive's files (last writer wins); a sync_id seen
        before is not applied again."""
        recent = json.loads(self.store.repo_attrs(fs_id).get(ATTR_SYNCS, "[]"))
        if sync_id in recent:
            return "ALREADY_PROCESSED"
        state = self._commit_sync(fs_id, sync_id, sha, files)
        recent = [*recent, sync_id][-RECENT_SYNCS:]
        self.store.set_repo_attrs(fs_id, {ATTR_SYNCS: json.dumps(recent)})
        return state

    def _commit_sync(
        self, fs_id: str, sync_id: str, sha: str, files: list[archives.ArchiveFile]
    ) -> str:
        # The commit's own idempotency record covers two identical requests at once.
        idempotency = Idempotency(f"terminaluse-sync:{sync_id}", sha)
        for _ in range(SYNC_ATTEMPTS):
            head, current = archives.walk(self.store, fs_id)
            operations = archives.sync_operations(current, files)
            if not operations:
                return "COMPLETED"
            try:
                result = self.store.commit(
                    fs_id,
                    operations,
                    message=f"terminaluse: sync {sync_id}",
                    idempotency=idempotency,
                    base=head,  # the diff was computed at this head
                )
            except IdempotencyConflict:
                return "ALREADY_PROCESSED"
            except StaleBase:
                continue  # a write landed meanwhile: diff again
            finally:
                trio.from_thread.run_sync(self.backend.hub.notify, fs_id)
            return "ALREADY_PROCESSED" if result.replayed else "COMPLETED"
        raise wire.FaceError(503, "the filesystem kept changing during the sync; try again")


async def _in_thread(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """Drive a blocking generator from worker threads, one step at a time."""
    done = object()
    try:
        while (chunk := await trio.to_thread.run_sync(next, chunks, done)) is not done:
            assert isinstance(chunk, bytes)
            yield chunk
    finally:
        chunks.close()
