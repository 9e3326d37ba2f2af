"""The native protocol under /v1. docs/native-api.md is its contract; keep them in step."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from email.utils import formatdate
from functools import wraps
from typing import Any, BinaryIO

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from repomount.paths import InvalidPathError, validate_path
from repomount.server import tarstream
from repomount.server.backend import Backend
from repomount.server.blobs import SHA256_RE
from repomount.server.body import read_json, spool_body
from repomount.server.errors import ApiError, status_of
from repomount.server.store import (
    ABSENT,
    PRESENT,
    Conflict,
    Delete,
    Entry,
    Idempotency,
    InvalidRequest,
    Mkdir,
    NotFound,
    Operation,
    Rename,
    StoreError,
    Symlink,
    Write,
    check_symlink_target,
    sha256_hex,
)

OCTET = "application/octet-stream"
CHUNK = 256 << 10
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_READ_PATHS = 10_000
MAX_OPERATIONS = 100_000
CHANGES_PER_ANSWER = 10_000

Handler = Callable[["NativeApi", Request], Awaitable[Response]]


def native_routes(backend: Backend) -> list[BaseRoute]:
    """The /v1 routes (mount them under "/v1")."""
    api = NativeApi(backend)
    files = "/repos/{repo}/files/{path:path}"
    return [
        Route("/repos", api.list_repos, methods=["GET"]),
        Route("/repos", api.create_repo, methods=["POST"]),
        Route("/repos/{repo}", api.repo_info, methods=["GET"]),
        Route("/repos/{repo}", api.delete_repo, methods=["DELETE"]),
        Route("/repos/{repo}/tree", api.tree, methods=["GET"]),
        Route(files, api.get_file, methods=["GET", "HEAD"]),
        Route(files, api.put_file, methods=["PUT"]),
        Route(files, api.delete_file, methods=["DELETE"]),
        Route("/repos/{repo}/read", api.read, methods=["POST"]),
        Route("/repos/{repo}/blobs/{sha}", api.put_blob, methods=["PUT"]),
        Route("/repos/{repo}/commits", api.commit, methods=["POST"]),
        Route("/repos/{repo}/changes", api.changes, methods=["GET"]),
    ]


def endpoint(fn: Handler) -> Handler:
    """Turn store and API errors into the native JSON error format."""

    @wraps(fn)
    async def handler(self: NativeApi, request: Request) -> Response:
        try:
            return await fn(self, request)
        except StoreError as error:
            return await self.error_response(request, error)

    return handler


class NativeApi:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.store = backend.store

    # --- repositories -------------------------------------------------------------------

    @endpoint
    async def list_repos(self, request: Request) -> Response:
        repos = await self.backend.run(self.store.list_repos)
        return _json(
            {
                "repos": [
                    {"name": r.name, "head": str(r.head), "created_at": r.created_at} for r in repos
                ]
            }
        )

    @endpoint
    async def create_repo(self, request: Request) -> Response:
        body = await read_json(self.backend, request)
        name = body.get("name")
        if not isinstance(name, str):
            raise ApiError("invalid_request", "the body needs a string field 'name'")
        repo = await self.backend.run(self.store.create_repo, name)
        return _json({"name": repo.name, "head": str(repo.head)}, 201, head=repo.head)

    @endpoint
    async def repo_info(self, request: Request) -> Response:
        info = await self.backend.run(self.store.repo_info, request.path_params["repo"])
        data = {
            "name": info.name,
            "head": str(info.head),
            "created_at": info.created_at,
            "file_count": info.file_count,
            "bytes": info.bytes,
        }
        return _json(data, head=info.head)

    @endpoint
    async def delete_repo(self, request: Request) -> Response:
        await self.backend.delete_repo(request.path_params["repo"])
        return Response(status_code=204)

    # --- reading ------------------------------------------------------------------------

    @endpoint
    async def tree(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        query = request.query_params
        path = query.get("path", "").strip("/")
        if path:
            path = _valid_path(path)
        recursive = _bool_param(query.get("recursive"), "recursive")
        limit = _int_param(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        at, after = _head_param(query.get("at"), "at"), None
        if query.get("cursor"):
            at, after = _decode_cursor(query["cursor"])
        listing = await self.backend.run(
            self.store.list_tree,
            repo,
            path,
            recursive=recursive,
            at=at,
            after=after,
            limit=limit,
        )
        next_cursor = None
        if listing.more and listing.entries:
            next_cursor = _encode_cursor(listing.head, listing.entries[-1].path)
        data = {
            "head": str(listing.head),
            "entries": [_entry_json(e) for e in listing.entries],
            "next_cursor": next_cursor,
        }
        return _json(data, head=listing.head)

    @endpoint
    async def get_file(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        path = _valid_path(request.path_params["path"])
        at = _head_param(request.query_params.get("at"), "at")
        head, entry = await self.backend.run(self.store.stat, repo, path, at)
        if entry is None or entry.type == "dir" or entry.version is None:
            where = "" if at is None else f" at {at}"
            what = "a directory" if entry is not None else "not found"
            raise NotFound(f"{path!r} in {repo!r}{where}: {what}", path=path)
        version = entry.version
        headers = {
            "ETag": f'"{version}"',
            "X-Repo-Head": str(head),
            "Last-Modified": formatdate(entry.mtime, usegmt=True),
            "X-Repomount-Mode": f"{entry.mode:o}",
            "X-Repomount-Type": entry.type,
            "Accept-Ranges": "bytes",
        }
        if_match = request.headers.get("if-match")
        if if_match is not None and not _etag_matches(if_match, version):
            raise ApiError(
                "precondition_failed",
                f"{path!r} is at version {version}, not the one in If-Match",
                current_version=version,
            )
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and _etag_matches(if_none_match, version):
            return Response(status_code=304, headers=headers)
        try:
            span = _parse_range(request.headers.get("range"), entry.size)
        except _Unsatisfiable:
            error = ApiError(
                "range_not_satisfiable", f"the range is outside the {entry.size}-byte content"
            )
            headers["Content-Range"] = f"bytes */{entry.size}"
            return _error_json(error, headers)
        status, (start, end) = (200, (0, entry.size)) if span is None else (206, span)
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=OCTET)
        if entry.target is not None:  # a symlink: its content is its target, never followed
            content = entry.target.encode("utf-8")[start:end]
            return Response(content, status_code=status, headers=headers, media_type=OCTET)
        blob = await self.backend.run(self.store.open_blob, version)
        return StreamingResponse(
            _stream_file(blob, start, end), status_code=status, headers=headers, media_type=OCTET
        )

    @endpoint
    async def read(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        await self.backend.run(self.store.head, repo)  # 404 before reading the body
        body = await read_json(self.backend, request)
        paths = body.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ApiError("invalid_request", "'paths' must be a list of strings")
        if len(paths) > MAX_READ_PATHS:
            raise ApiError("invalid_request", f"at most {MAX_READ_PATHS} paths per request")
        for path in paths:
            _valid_path(path)
        at = _head_param(body.get("at"), "at")
        head, entries = await self.backend.run(self.store.stat_many, repo, paths, at)
        return StreamingResponse(
            self._tar(paths, entries),
            media_type="application/x-tar",
            headers={"X-Repo-Head": str(head)},
        )

    async def _tar(
        self, paths: Sequence[str], entries: Sequence[Entry | None]
    ) -> AsyncIterator[bytes]:
        missing = []
        for path, entry in zip(paths, entries, strict=True):
            if entry is None or entry.type == "dir" or entry.version is None:
                missing.append(path)
                continue
            if entry.target is not None:
                yield tarstream.symlink_header(
                    path,
                    entry.target,
                    mtime=entry.mtime,
                    mode=entry.mode,
                    pax={tarstream.VERSION_KEY: entry.version},
                )
                continue
            yield tarstream.member_header(
                path,
                entry.size,
                mtime=entry.mtime,
                mode=entry.mode,
                pax={tarstream.VERSION_KEY: entry.version},
            )
            blob = await self.backend.run(self.store.open_blob, entry.version)
            async for chunk in _stream_file(blob, 0, entry.size):
                yield chunk
            yield tarstream.padding(entry.size)
        listing = json.dumps(missing).encode()
        yield tarstream.member_header(tarstream.MISSING_NAME, len(listing), mtime=0, mode=0o644)
        yield listing + tarstream.padding(len(listing))
        yield tarstream.END_OF_ARCHIVE

    @endpoint
    async def changes(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        query = request.query_params
        since = _head_param(query.get("since"), "since")
        wait = min(_float_param(query.get("wait"), "wait"), self.backend.options.max_wait)
        if since is None:
            head = await self.backend.run(self.store.head, repo)
            return _json({"head": str(head), "changes": []}, head=head)
        hub = self.backend.hub
        deadline = trio.current_time() + wait
        while True:
            # Take the event before reading, so a commit in between still wakes us.
            event = hub.event(repo)
            found = await self.backend.run(self.store.changes, repo, since, CHANGES_PER_ANSWER)
            if found.head != since or hub.closing or trio.current_time() >= deadline:
                break
            with trio.move_on_at(deadline):
                await event.wait()
        changes = [
            {"path": c.path, "op": c.op, "version": c.version, "head": str(c.head)}
            for c in found.changes
        ]
        return _json({"head": str(found.head), "changes": changes}, head=found.head)

    # --- writing ------------------------------------------------------------------------

    @endpoint
    async def put_file(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        path = _valid_path(request.path_params["path"])
        await self.backend.run(self.store.head, repo)  # 404 before reading the body
        expect = self._expectation(request, allow_create_only=True)
        mode = _mode_param(request.headers.get("x-repomount-mode"))
        spool = await spool_body(self.backend, request)
        try:
            await self.backend.run(self.store.add_blob, spool)
        except BaseException:
            self.store.discard_spool(spool)
            raise
        idempotency = None
        if key := request.headers.get("idempotency-key"):
            preconditions = (request.headers.get("if-match"), request.headers.get("if-none-match"))
            idempotency = Idempotency(
                key, _fingerprint(["put", path, spool.sha256, preconditions, mode])
            )
        try:
            result = await self.backend.commit(
                repo,
                [Write(path, spool.sha256, expect=expect, mode=mode)],
                message=f"PUT {path}",
                idempotency=idempotency,
            )
        except Conflict as conflict:
            raise _precondition_failed(path, conflict) from None
        done = result.results[0]
        data = {"head": str(result.head), "path": path, "version": done.version, "size": spool.size}
        return _json(data, 201 if done.created else 200, head=result.head)

    @endpoint
    async def delete_file(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        path = _valid_path(request.path_params["path"])
        expect = self._expectation(request, allow_create_only=False)
        try:
            result = await self.backend.commit(
                repo, [Delete(path, expect=expect)], message=f"DELETE {path}"
            )
        except Conflict as conflict:
            raise _precondition_failed(path, conflict) from None
        return _json({"head": str(result.head)}, head=result.head)

    @endpoint
    async def put_blob(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        sha = request.path_params["sha"]
        if not SHA256_RE.fullmatch(sha):
            raise ApiError("invalid_request", f"{sha!r} is not a lowercase hex SHA-256")
        head = await self.backend.run(self.store.head, repo)
        spool = await spool_body(self.backend, request)
        if spool.sha256 != sha:
            self.store.discard_spool(spool)
            raise ApiError(
                "hash_mismatch",
                f"the body's SHA-256 is {spool.sha256}, not {sha}",
                expected=sha,
                actual=spool.sha256,
            )
        try:
            new = await self.backend.run(self.store.add_blob, spool)
        except BaseException:
            self.store.discard_spool(spool)
            raise
        return _json({"sha256": sha, "size": spool.size}, 201 if new else 200, head=head)

    @endpoint
    async def commit(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        await self.backend.run(self.store.head, repo)  # 404 before reading the body
        body = await read_json(self.backend, request)
        operations, inline = _parse_operations(body.get("operations"))
        message, author = _str_field(body, "message"), _str_field(body, "author")
        key = body.get("idempotency_key")
        if key is not None and (not isinstance(key, str) or not key):
            raise ApiError("invalid_request", "'idempotency_key' must be a non-empty string")
        if inline:
            await self.backend.run(self._store_inline, inline)
        idempotency = None if key is None else Idempotency(key, _fingerprint(body))
        result = await self.backend.commit(
            repo, operations, message=message, author=author, idempotency=idempotency
        )
        results = [{"path": r.path, "version": r.version} for r in result.results]
        return _json({"head": str(result.head), "results": results}, 201, head=result.head)

    def _store_inline(self, contents: Sequence[bytes]) -> None:
        spools = []
        try:
            for content in contents:
                spools.append(self.store.new_spool())
                spools[-1].write(content)
            self.store.add_blobs(spools)
        except BaseException:
            for spool in spools:
                self.store.discard_spool(spool)
            raise

    def _expectation(self, request: Request, *, allow_create_only: bool) -> str | None:
        """The `expect` of a PUT or DELETE from its If-Match / If-None-Match headers."""
        if_match = request.headers.get("if-match")
        if_none_match = request.headers.get("if-none-match")
        if if_match is not None and if_none_match is not None:
            raise ApiError("invalid_request", "send If-Match or If-None-Match, not both")
        if if_match is not None:
            tags = _etags(if_match)
            if len(tags) != 1:
                raise ApiError("invalid_request", "If-Match must hold exactly one version")
            return PRESENT if tags[0] == "*" else tags[0]
        if if_none_match is not None:
            if not allow_create_only or if_none_match.strip() != "*":
                raise ApiError(
                    "invalid_request", "only 'If-None-Match: *' (create only) is supported on PUT"
                )
            return ABSENT
        if self.backend.options.require_preconditions:
            raise ApiError(
                "precondition_required",
                'this server requires If-Match: "<version>" or If-None-Match: * on writes',
            )
        return None

    # --- errors -------------------------------------------------------------------------

    async def error_response(self, request: Request, error: StoreError) -> Response:
        headers = {}
        repo = request.path_params.get("repo")
        if repo is not None:
            try:
                headers["X-Repo-Head"] = str(await self.backend.run(self.store.head, repo))
            except NotFound:
                pass
        return _error_json(error, headers)


# --- helpers ---------------------------------------------------------------------------


class _Unsatisfiable(Exception):
    pass


def _json(data: Any, status: int = 200, *, head: int | None = None) -> JSONResponse:
    headers = None if head is None else {"X-Repo-Head": str(head)}
    return JSONResponse(data, status_code=status, headers=headers)


def _error_json(error: StoreError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message, **error.details}}
    return JSONResponse(body, status_code=status_of(error), headers=headers)


def _precondition_failed(path: str, conflict: Conflict) -> ApiError:
    current = conflict.conflicts[0].current
    state = "absent" if current is None else f"at version {current}"
    return ApiError(
        "precondition_failed",
        f"precondition failed: {path!r} is {state}",
        current_version=current,
    )


def _entry_json(e: Entry) -> dict[str, Any]:
    data: dict[str, Any] = {
        "path": e.path,
        "type": e.type,
        "size": e.size,
        "version": e.version,
        "mtime": e.mtime,
        "mode": e.mode,
    }
    if e.target is not None:
        data["target"] = e.target
    return data


async def _stream_file(file: BinaryIO, start: int, end: int) -> AsyncIterator[bytes]:
    try:
        if start:
            await trio.to_thread.run_sync(file.seek, start)
        remaining = end - start
        while remaining > 0:
            chunk = await trio.to_thread.run_sync(file.read, min(CHUNK, remaining))
            if not chunk:
                raise RuntimeError(f"blob {file.name} is shorter than recorded")
            remaining -= len(chunk)
            yield chunk
    finally:
        file.close()


def _fingerprint(value: Any) -> str:
    return sha256_hex(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def _valid_path(path: str) -> str:
    try:
        return validate_path(path)
    except InvalidPathError as error:
        raise ApiError("invalid_path", str(error), path=path) from None


def _etags(header: str) -> list[str]:
    """The versions in an If-Match / If-None-Match header ('*' kept as is)."""
    tags = []
    for raw in header.split(","):
        tag = raw.strip().removeprefix("W/").strip('"')
        if tag:
            tags.append(tag)
    return tags


def _etag_matches(header: str, version: str) -> bool:
    tags = _etags(header)
    return "*" in tags or version in tags


_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single-range `Range` header; None to send everything (no header,
    or one this server does not support, such as several ranges, which HTTP lets it ignore).
    """
    if header is None:
        return None
    m = _RANGE_RE.fullmatch(header)
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:  # the last n bytes
        n = int(m[2])
        if n == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - n), size
    start = int(m[1])
    if m[2] and int(m[2]) < start:
        return None  # syntactically invalid: ignored, as HTTP says
    if start >= size:
        raise _Unsatisfiable
    end = size if not m[2] else min(int(m[2]) + 1, size)
    return start, end


def _head_param(value: object, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise ApiError("invalid_request", f"{name!r} must be a head (a decimal number), not {value!r}")


def _int_param(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise ApiError("invalid_request", f"{name!r} must be a number from {low} to {high}")
    return int(value)


def _float_param(value: str | None, name: str) -> float:
    if value is None:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ApiError("invalid_request", f"{name!r} must be a number of seconds, not {value!r}")
    return number


def _bool_param(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("", "0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise ApiError("invalid_request", f"{name!r} must be 1 or 0, not {value!r}")


def _mode_param(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise ApiError(
            "invalid_request", f"X-Repomount-Mode must be octal permission bits, not {value!r}"
        )
    return mode


def _encode_cursor(head: int, last_path: str) -> str:
    return base64.urlsafe_b64encode(f"{head}:{last_path}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        head, last_path = text.split(":", 1)
        return int(head), last_path
    except (ValueError, binascii.Error):
        raise ApiError("invalid_request", f"{cursor!r} is not a cursor from this server") from None


def _str_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise ApiError("invalid_request", f"{name!r} must be a string")
    return value


def _parse_operations(raw: object) -> tuple[list[Operation], list[bytes]]:
    """Operations of a commit body, and the inline contents to store as blobs first."""
    if not isinstance(raw, list) or not raw:
        raise ApiError("invalid_request", "'operations' must be a non-empty list")
    if len(raw) > MAX_OPERATIONS:
        raise ApiError("invalid_request", f"at most {MAX_OPERATIONS} operations per commit")
    operations: list[Operation] = []
    inline: list[bytes] = []
    for index, op in enumerate(raw):
        try:
            operations.append(_parse_operation(op, inline))
        except ApiError as error:
            error.details.setdefault("index", index)
            error.message = f"operation {index}: {error.message}"
            raise
    return operations, inline


def _parse_operation(op: object, inline: list[bytes]) -> Operation:
    if not isinstance(op, dict):
        raise ApiError("invalid_request", "an operation must be a JSON object")
    kind = op.get("op")
    if kind == "write":
        path = _op_path(op, "path")
        blob, content = op.get("blob"), op.get("content_b64")
        if (blob is None) == (content is None):
            raise ApiError("invalid_request", "a write needs exactly one of 'blob', 'content_b64'")
        if content is not None:
            if not isinstance(content, str):
                raise ApiError("invalid_request", "'content_b64' must be a string")
            try:
                data = base64.b64decode(content, validate=True)
            except binascii.Error:
                raise ApiError("invalid_request", "'content_b64' is not valid base64") from None
            inline.append(data)
            blob = sha256_hex(data)
        elif not isinstance(blob, str) or not SHA256_RE.fullmatch(blob):
            raise ApiError("invalid_request", "'blob' must be a lowercase hex SHA-256")
        mode = op.get("mode")
        if mode is not None and (
            not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777
        ):
            raise ApiError("invalid_request", "'mode' must be permission bits (0 to 4095)")
        return Write(path, blob, expect=_op_expect(op, "expect"), mode=mode)
    if kind == "delete":
        return Delete(_op_path(op, "path"), expect=_op_expect(op, "expect"))
    if kind == "rename":
        return Rename(
            _op_path(op, "from"),
            _op_path(op, "to"),
            expect=_op_expect(op, "expect"),
            expect_to=_op_expect(op, "expect_to"),
        )
    if kind == "mkdir":
        return Mkdir(_op_path(op, "path"))
    if kind == "symlink":
        path, target = _op_path(op, "path"), op.get("target")
        try:
            check_symlink_target(target)
        except InvalidRequest as error:
            raise ApiError("invalid_request", error.message, path=path) from None
        assert isinstance(target, str)
        return Symlink(path, target, expect=_op_expect(op, "expect"))
    raise ApiError(
        "invalid_request", f"unknown op {kind!r} (write, delete, rename, mkdir or symlink)"
    )


def _op_path(op: dict[str, Any], field: str) -> str:
    value = op.get(field)
    if not isinstance(value, str):
        raise ApiError("invalid_request", f"{field!r} must be a path string")
    return _valid_path(value)


def _op_expect(op: dict[str, Any], field: str) -> str | None:
    value = op.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError("invalid_request", f'{field!r} must be a version, "absent" or "*"')
    return value
