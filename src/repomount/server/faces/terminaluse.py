"""The Terminal Use "filesystems" dialect over the shared store (mounted at /terminaluse).

The wire contract is the one the official `terminaluse` SDK (0.35.0) speaks; see
docs/remotes.md for what this face decides where the public docs say nothing.

Mapping onto the store:
- a filesystem is a repository; its id is the repository name, so every repository
  (also one made through the native API) is a filesystem. `POST /filesystems` creates a
  repository named `fs_<random hex>` and keeps `name`/`project_id` as repo attributes.
- a file version is the SHA-256 of the content (bare hex; manifests say `sha256:<hex>`).
- the archive version, the filesystem-wide token of `baseVersion`, names the store head:
  16 hex digits of the head, then 48 of a hash that ties it to this repository's
  incarnation, so a token from a deleted namesake or another filesystem never matches.
- archives (tar.zst) travel through presigned URLs on this server (server/presign.py);
  `sync-complete` replaces the whole tree by the uploaded archive's files, last writer
  wins, as on the real service.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from functools import wraps
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from repomount.paths import InvalidPathError, validate_path
from repomount.server import presign
from repomount.server.backend import Backend
from repomount.server.body import read_json, spool_body
from repomount.server.faces import terminaluse_archive as archives
from repomount.server.faces import terminaluse_wire as wire
from repomount.server.store import (
    ABSENT,
    Conflict,
    Entry,
    Idempotency,
    IdempotencyConflict,
    NotFound,
    RepoInfo,
    StaleBase,
    StoreError,
    Write,
)

ATTR_SYNCS = "terminaluse.recent_sync_ids"  # JSON list, newest last
RECENT_SYNCS = 100
MAX_CONTENT = 1 << 20  # listings inline text content up to 1 MiB, as the SDK's manifests
DEFAULT_LIMIT, MAX_LIMIT = 1000, 5000
DEFAULT_EXPIRY, MIN_EXPIRY, MAX_EXPIRY = 3600, 60, 604800
CHUNK = 256 << 10
SYNC_ATTEMPTS = 5
OCTET = "application/octet-stream"
ZSTD = "application/zstd"

# Store error code -> status on this face (the SDK knows 400/404/409/412/422/428).
STATUS = {
    "not_found": 404,
    "idempotency_conflict": 409,
    "stale_base": 409,
    "conflict": 412,
    "too_large": 413,
    "invalid_path": 400,
    "invalid_request": 400,
    "path_conflict": 400,
    "directory_not_empty": 400,
    "bad_json": 400,
    "hash_mismatch": 400,
}

Handler = Callable[["TerminalUseFace", Request], Awaitable[Response]]


def terminaluse_routes(backend: Backend) -> list[BaseRoute]:
    """The routes (mount them under "/terminaluse", the SDK's base_url)."""
    face = TerminalUseFace(backend)
    fs = "/filesystems/{filesystem_id}"
    return [
        Route("/filesystems", face.list_filesystems, methods=["GET"]),
        Route("/filesystems", face.create_filesystem, methods=["POST"]),
        Route(fs, face.get_filesystem, methods=["GET"]),
        Route(fs + "/files", face.list_files, methods=["GET"]),
        Route(fs + "/files/{file_path:path}", face.get_file, methods=["GET"]),
        Route(fs + "/file-download", face.download_file, methods=["GET"]),
        Route(fs + "/file-upload", face.upload_file, methods=["PUT"]),
        Route(fs + "/upload-url", face.upload_url, methods=["POST"]),
        Route(fs + "/download-url", face.download_url, methods=["POST"]),
        Route(fs + "/sync-complete", face.sync_complete, methods=["POST"]),
        # The presigned "bucket": reached without the bearer token, by signature.
        Route("/archives/{filesystem_id}", face.put_archive, methods=["PUT"]),
        Route("/archives/{filesystem_id}", face.get_archive, methods=["GET"]),
    ]


def endpoint(fn: Handler) -> Handler:
    @wraps(fn)
    async def handler(self: TerminalUseFace, request: Request) -> Response:
        try:
            return await fn(self, request)
        except wire.ValidationError as error:
            return JSONResponse(error.body, status_code=422)
        except wire.FaceError as error:
            return wire.error_response(error.status, error.message)
        except StoreError as error:
            return wire.error_response(STATUS.get(error.code, 500), error.message)

    return handler


class TerminalUseFace:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.store = backend.store

    # --- filesystems ---------------------------------------------------------------------

    @endpoint
    async def list_filesystems(self, request: Request) -> Response:
        project = request.query_params.get("project_id")
        found = []
        for info in await self.backend.run(self.store.list_repos):
            try:
                attrs = await self.backend.run(self.store.repo_attrs, info.name)
            except NotFound:
                continue  # deleted meanwhile
            if project is None or attrs.get(wire.ATTR_PROJECT) == project:
                found.append(wire.filesystem_json(info, attrs))
        return JSONResponse(found)

    @endpoint
    async def create_filesystem(self, request: Request) -> Response:
        body = await read_json(self.backend, request)
        project, name = body.get("project_id"), body.get("name")
        if not isinstance(project, str):
            raise wire.ValidationError("body", "project_id", "a string is required")
        if name is not None and not isinstance(name, str):
            raise wire.ValidationError("body", "name", "must be a string or null")
        fs_id = "fs_" + secrets.token_hex(10)
        await self.backend.run(self.store.create_repo, fs_id)
        attrs = {wire.ATTR_PROJECT: project} | ({wire.ATTR_NAME: name} if name is not None else {})
        await self.backend.run(self.store.set_repo_attrs, fs_id, attrs)
        info = await self.backend.run(self.store.repo_info, fs_id)
        return JSONResponse(wire.filesystem_json(info, attrs), status_code=201)

    @endpoint
    async def get_filesystem(self, request: Request) -> Response:
        fs_id = request.path_params["filesystem_id"]
        info = await self._info(fs_id)
        attrs = await self.backend.run(self.store.repo_attrs, fs_id)
        return JSONResponse(wire.filesystem_json(info, attrs))

    # --- reading -------------------------------------------------------------------------

    @endpoint
    async def list_files(self, request: Request) -> Response:
        fs_id = request.path_params["filesystem_id"]
        query = request.query_params
        directory = query.get("directory", "/").strip("/")
        if directory:
            try:
                validate_path(directory)
            except InvalidPathError as error:
                raise wire.ValidationError("query", "directory", str(error)) from None
        recursive = wire.bool_param(query.get("recursive"), "recursive", default=True)
        include_content = wire.bool_param(
            query.get("include_content"), "include_content", default=True
        )
        limit = wire.int_param(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = wire.int_param(query.get("offset"), "offset", 0, 0, None)
        mime_type = query.get("mime_type")
        await self._info(fs_id)
        entries = await self.backend.run(self._matching, fs_id, directory, recursive, mime_type)
        page = entries[offset : offset + limit]
        files = [await self._file_json(fs_id, e, include_content) for e in page]
        data = {
            "files": files,
            "filesystem_id": fs_id,
            "total_count": len(entries),
            "synced_at": wire.iso(time.time()),  # the manifest is the live tree
        }
        return JSONResponse(data)

    def _matching(
        self, fs_id: str, directory: str, recursive: bool, mime_type: str | None
    ) -> list[Entry]:
        """Files below `directory` (and, not recursive, its direct subdirectories): the
        manifest lists files only, directories are implicit in their paths."""
        try:
            _, entries = archives.walk(self.store, fs_id, directory, recursive=recursive)
            if recursive:
                entries = [e for e in entries if e.type == "file"]
        except NotFound:
            self.store.head(fs_id)  # an unknown filesystem stays 404
            return []  # `directory` is only a filter: nothing below it
        if mime_type is not None:
            entries = [e for e in entries if wire.mime_of(e) == mime_type]
        return entries

    @endpoint
    async def get_file(self, request: Request) -> Response:
        fs_id = request.path_params["filesystem_id"]
        path = wire.request_path(request.path_params["file_path"], status=404)
        include = wire.bool_param(
            request.query_params.get("include_content"), "include_content", True
        )
        _, entry = await self.backend.run(self.store.stat, fs_id, path)
        if entry is None:
            raise wire.FaceError(404, f"File not found: {path}")
        return JSONResponse(await self._file_json(fs_id, entry, include))

    @endpoint
    async def download_file(self, request: Request) -> Response:
        fs_id = request.path_params["filesystem_id"]
        raw = request.query_params.get("path")
        if raw is None:
            raise wire.ValidationError("query", "path", "field required")
        path = wire.request_path(raw, status=404)
        _, entry = await self.backend.run(self.store.stat, fs_id, path)
        if entry is None or entry.type != "file" or entry.version is None:
            raise wire.FaceError(404, f"File not found: {path}")
        blob = await self.backend.run(self.store.open_blob, entry.version)
        headers = {"Content-Length": str(entry.size)}
        return StreamingResponse(_stream(blob.read, blob.close), media_type=OCTET, headers=headers)

    async def _file_json(self, fs_id: str, entry: Entry, include_content: bool) -> dict[str, Any]:
        is_dir = entry.type == "dir"
        content: str | None = None
        truncated = False
        mime = None if is_dir else wire.mime_of(entry)
        binary = mime is not None and not wire.texty(mime)
        if include_content and entry.type == "file" and entry.version is not None:
            head = await self.backend.run(_read_head, self.store, entry.version)
            text = wire.as_text(head[:MAX_CONTENT], cut=len(head) > MAX_CONTENT)
            binary = text is None
            if text is not None:
                content, truncated = text, entry.size > MAX_CONTENT
        modified = wire.iso(entry.mtime)
        return {
            "path": entry.path,
            "is_directory": is_dir,
            "size_bytes": None if is_dir else entry.size,
            "checksum": None if entry.version is None else f"sha256:{entry.version}",
            "mime_type": mime,
            "modified_at": modified,
            "synced_at": modified,
            "is_binary": binary,
            "content": content,
            "content_truncated": truncated,
        }

    # --- single-file upload --------------------------------------------------------------

    @endpoint
    async def upload_file(self, request: Request) -> Response:
        fs_id = request.path_params["filesystem_id"]
        query = request.query_params
        info = await self._info(fs_id)  # 1. 404 before reading the body
        # 2. malformed requests: 400
        if "path" not in query:
            raise wire.ValidationError("query", "path", "field required")
        path = wire.request_path(query["path"], status=400)
        mode = query.get("writeMode", "overwrite")
        if mode not in ("overwrite", "conditional"):
            raise wire.FaceError(400, f"writeMode must be overwrite or conditional, not {mode!r}")
        create_only = query.get("createOnly")
        if create_only is not None and create_only != "*":
            raise wire.FaceError(400, "createOnly must be '*'")
        expected = query.get("expectedVersion")
        if mode == "conditional" and create_only is not None and expected is not None:
            raise wire.FaceError(400, "give expectedVersion or createOnly, not both")
        digest = wire.parse_digest(query.get("digest"))
        spool = await spool_body(self.backend, request)
        try:
            if digest is not None and digest != spool.sha256:
                raise wire.FaceError(400, "digest does not match the request body")
            await self.backend.run(self.store.add_blob, spool)
        except BaseException:
            self.store.discard_spool(spool)
            raise
        # 3. conditional mode needs its filesystem-wide precondition
        base_version = query.get("baseVersion")
        if mode == "conditional" and base_version is None:
            raise wire.FaceError(428, "baseVersion is required in conditional mode.")
        expect: str | None = None
        base: int | None = None
        if mode == "conditional":
            assert base_version is not None
            base = wire.base_head(base_version, info)
            expect = (
                ABSENT if create_only is not None else wire.norm(expected) if expected else None
            )
        # 4.-7. replay, 409 stale base, 412 file precondition, commit: one store call.
        idempotency = None
        if key := request.headers.get("idempotency-key"):
            parts = [path, spool.sha256, mode, wire.norm(base_version or ""), expect]
            idempotency = Idempotency(key, wire.fingerprint(["terminaluse-upload", *parts]))
        try:
            result = await self.backend.commit(
                fs_id,
                [Write(path, spool.sha256, expect=expect)],
                message=f"terminaluse: upload {path}",
                idempotency=idempotency,
                base=base,
            )
        except StaleBase:
            raise wire.FaceError(
                409, "baseVersion does not match current archive version."
            ) from None
        except IdempotencyConflict:
            raise wire.FaceError(
                409, "Idempotency-Key was already used for a different request."
            ) from None
        except Conflict:
            raise wire.FaceError(
                412, "expectedVersion does not match current file version."
            ) from None
        done = result.results[0]
        data = {
            "archive_version": wire.archive_version(info, result.head),
            "created": done.created,
            "file_version": done.version,
            "filesystem_id": fs_id,
            "path": path,
            "size_bytes": spool.size,
            "write_mode": mode,
        }
        return JSONResponse(data, status_code=201 if done.created else 200)

    # --- archives ------------------------------------------------------------------------

    @endpoint
    async def upload_url(self, request: Request) -> Response:
        return await self._presigned(request, "PUT")

    @endpoint
    async def download_url(self, request: Request) -> Response:
        return await self._presigned(request, "GET")

    async def _presigned(self, request: Request, method: str) -> Response:
        fs_id = request.path_params["filesystem_id"]
        expiry = await self._expiry(request)
        await self._info(fs_id)
        expires = int(time.time()) + expiry
        # The full path as the presigned request will carry it (scope["path"]).
        path = f"{request.scope.get('root_path', '')}/archives/{fs_id}"
        query = presign.presigned_query(self.backend.options.token, method, path, expires)
        data = {
            "url": f"{request.url.scheme}://{request.url.netloc}{path}?{query}",
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
        raw = await request.body()
        if not raw.strip() or raw.strip() == b"null":
            return DEFAULT_EXPIRY
        try:
            body = json.loads(raw)
        except ValueError:
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

    @endpoint
    async def put_archive(self, request: Request) -> Response:
        self._check_signature(request)
        await self._info(request.path_params["filesystem_id"])
        spool = await spool_body(self.backend, request)  # checked at sync-complete
        try:
            await self.backend.run(self.store.add_blob, spool)
        except BaseException:
            self.store.discard_spool(spool)
            raise
        return Response(status_code=200)

    @endpoint
    async def get_archive(self, request: Request) -> Response:
        self._check_signature(request)
        info = await self._info(request.path_params["filesystem_id"])
        if info.head == 0:  # like the bucket: no object before the first write
            raise wire.FaceError(404, "no archive exists for this filesystem yet")
        chunks = archives.archive_chunks(self.store, info.name, info.head)
        return StreamingResponse(_in_thread(chunks), media_type=ZSTD)

    @endpoint
    async def sync_complete(self, request: Request) -> Response:
        fs_id = request.path_params["filesystem_id"]
        info = await self._info(fs_id)
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
        wire.check_manifest(files, unpacked)
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

    # --- helpers -------------------------------------------------------------------------

    async def _info(self, fs_id: str) -> RepoInfo:
        try:
            return await self.backend.run(self.store.repo_info, fs_id)
        except NotFound:
            raise wire.FaceError(404, f"Filesystem not found: {fs_id}") from None


# --- module helpers --------------------------------------------------------------------


def _read_head(store: Any, version: str) -> bytes:
    with store.open_blob(version) as blob:
        data: bytes = blob.read(MAX_CONTENT + 1)
        return data


async def _stream(read: Callable[[int], bytes], close: Callable[[], None]) -> AsyncIterator[bytes]:
    try:
        while chunk := await trio.to_thread.run_sync(read, CHUNK):
            yield chunk
    finally:
        close()


async def _in_thread(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """Drive a blocking generator from worker threads, one step at a time."""
    done = object()
    try:
        while (chunk := await trio.to_thread.run_sync(next, chunks, done)) is not done:
            assert isinstance(chunk, bytes)
            yield chunk
    finally:
        chunks.close()
