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
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from repomount.paths import InvalidPathError, validate_path
from repomount.server.backend import Backend
from repomount.server.body import SMALL_JSON_BODY, read_json, spool_body
from repomount.server.faces import terminaluse_archive as archives
from repomount.server.faces import terminaluse_wire as wire
from repomount.server.faces.terminaluse_sync import ArchiveApi
from repomount.server.jsonresponse import JSONResponse
from repomount.server.store import (
    ABSENT,
    Conflict,
    Entry,
    Idempotency,
    IdempotencyConflict,
    NotFound,
    StaleBase,
    Write,
)

MAX_CONTENT = 1 << 20  # listings inline text content up to 1 MiB, as the SDK's manifests
DEFAULT_LIMIT, MAX_LIMIT = 1000, 5000
CHUNK = 256 << 10
OCTET = "application/octet-stream"


def terminaluse_routes(backend: Backend) -> list[BaseRoute]:
    """The routes (mount them under "/terminaluse", the SDK's base_url)."""
    face, archive = TerminalUseFace(backend), ArchiveApi(backend)
    fs = "/filesystems/{filesystem_id}"
    return [
        Route("/filesystems", face.list_filesystems, methods=["GET"]),
        Route("/filesystems", face.create_filesystem, methods=["POST"]),
        Route(fs, face.get_filesystem, methods=["GET"]),
        Route(fs + "/files", face.list_files, methods=["GET"]),
        Route(fs + "/files/{file_path:path}", face.get_file, methods=["GET"]),
        Route(fs + "/file-download", face.download_file, methods=["GET"]),
        Route(fs + "/file-upload", face.upload_file, methods=["PUT"]),
        Route(fs + "/upload-url", archive.upload_url, methods=["POST"]),
        Route(fs + "/download-url", archive.download_url, methods=["POST"]),
        Route(fs + "/sync-complete", archive.sync_complete, methods=["POST"]),
        # The presigned "bucket": reached without the bearer token, by signature.
        Route("/archives/{filesystem_id}", archive.put_archive, methods=["PUT"]),
        Route("/archives/{filesystem_id}", archive.get_archive, methods=["GET"]),
    ]


class TerminalUseFace:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.store = backend.store

    # --- filesystems ---------------------------------------------------------------------

    @wire.endpoint
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

    @wire.endpoint
    async def create_filesystem(self, request: Request) -> Response:
        body = await read_json(self.backend, request, SMALL_JSON_BODY)
        project, name = body.get("project_id"), body.get("name")
        if not isinstance(project, str):
            raise wire.ValidationError("body", "project_id", "a string is required")
        if name is not None and not isinstance(name, str):
            raise wire.ValidationError("body", "name", "must be a string or null")
        wire.unicode_field(project, "project_id")
        if name is not None:
            wire.unicode_field(name, "name")
        fs_id = "fs_" + secrets.token_hex(10)
        await self.backend.run(self.store.create_repo, fs_id)
        attrs = {wire.ATTR_PROJECT: project} | ({wire.ATTR_NAME: name} if name is not None else {})
        await self.backend.run(self.store.set_repo_attrs, fs_id, attrs)
        info = await self.backend.run(self.store.repo_info, fs_id)
        return JSONResponse(wire.filesystem_json(info, attrs), status_code=201)

    @wire.endpoint
    async def get_filesystem(self, request: Request) -> Response:
        fs_id = request.path_params["filesystem_id"]
        info = await wire.filesystem_info(self.backend, fs_id)
        attrs = await self.backend.run(self.store.repo_attrs, fs_id)
        return JSONResponse(wire.filesystem_json(info, attrs))

    # --- reading -------------------------------------------------------------------------

    @wire.endpoint
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
        await wire.filesystem_info(self.backend, fs_id)
        entries = await self.backend.run(self._matching, fs_id, directory, recursive, mime_type)
        page = entries[offset : offset + limit]
        rest = {
            "filesystem_id": fs_id,
            "total_count": len(entries),
            "synced_at": wire.iso(time.time()),  # the manifest is the live tree
        }
        body = self._files_body(fs_id, page, include_content, rest)
        return StreamingResponse(body, media_type="application/json")

    async def _files_body(
        self, fs_id: str, page: list[Entry], include_content: bool, rest: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        """`{"files": [...], **rest}`, streamed a file at a time: a page may inline up to
        5,000 contents of 1 MiB each, far too much to build whole."""
        yield b'{"files":['
        for index, entry in enumerate(page):
            try:
                item = await self._file_json(fs_id, entry, include_content)
            except NotFound:  # its content went meanwhile: listed without it
                item = await self._file_json(fs_id, entry, False)
            yield (b"," if index else b"") + json.dumps(item, ensure_ascii=False).encode()
        yield b"]," + json.dumps(rest, ensure_ascii=False).encode()[1:]

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

    @wire.endpoint
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

    @wire.endpoint
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

    @wire.endpoint
    async def upload_file(self, request: Request) -> Response:
        fs_id = request.path_params["filesystem_id"]
        query = request.query_params
        info = await wire.filesystem_info(self.backend, fs_id)  # 1. 404 before reading the body
        # 2. malformed requests: 400
        if "path" not in query:
            raise wire.ValidationError("query", "path", "field required")
        path = wire.request_path(query["path"], status=400, write=True)
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
