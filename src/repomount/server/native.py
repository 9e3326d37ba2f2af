"""The native protocol under /v1: its routes and handlers. docs/native-api.md is its
contract; keep them in step. Reading a request's parts is in native_requests.py, the
shapes of answers (JSON, errors, streamed content) in native_responses.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from functools import cache, partial, wraps

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from repomount.server.backend import Backend
from repomount.server.blobpack import receive_pack
from repomount.server.blobs import SHA256_RE
from repomount.server.body import (
    SMALL_JSON_BODY,
    json_body,
    parse_json_object,
    parsing_turn,
    read_json,
    spool_body,
)
from repomount.server.errors import ApiError
from repomount.server.native_requests import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Unsatisfiable,
    bool_param,
    decode_cursor,
    encode_cursor,
    etag_matches,
    fingerprint,
    float_param,
    head_param,
    idempotency_key,
    int_param,
    mode_param,
    mtime_ns_param,
    parse_operations,
    parse_range,
    read_paths,
    str_field,
    valid_path,
    writable_path,
    write_expectation,
)
from repomount.server.native_responses import (
    OCTET,
    error_json,
    json_response,
    precondition_failed,
    stream_file,
    stream_tar,
    tree_response,
)
from repomount.server.store import (
    Conflict,
    Delete,
    Idempotency,
    NotFound,
    Operation,
    Store,
    StoreError,
    Write,
)

CHANGES_PER_ANSWER = 10_000
SMALL_BODY = 64 << 10  # a PUT or commit body up to this is read before its repo is looked up

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
        Route("/repos/{repo}/blobs", api.post_blobs, methods=["POST"]),
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
        return json_response(
            {
                "repos": [
                    {"name": r.name, "head": str(r.head), "created_at": r.created_at} for r in repos
                ]
            }
        )

    @endpoint
    async def create_repo(self, request: Request) -> Response:
        body = await read_json(self.backend, request, SMALL_JSON_BODY)
        name = body.get("name")
        if not isinstance(name, str):
            raise ApiError("invalid_request", "the body needs a string field 'name'")
        repo = await self.backend.run(self.store.create_repo, name)
        return json_response({"name": repo.name, "head": str(repo.head)}, 201, head=repo.head)

    @endpoint
    async def repo_info(self, request: Request) -> Response:
        info = await self.backend.run(self.store.repo_info, request.path_params["repo"])
        data = {
            "name": info.name,
            "head": str(info.head),
            "created_at": info.created_at,
            "file_count": info.file_count,
            "bytes": info.bytes,
            "max_file_size": self.backend.options.max_file_size,
        }
        return json_response(data, head=info.head)

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
            path = valid_path(path)
        recursive = bool_param(query.get("recursive"), "recursive")
        limit = int_param(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        at, after = head_param(query.get("at"), "at"), None
        if query.get("cursor"):
            at, after = decode_cursor(query["cursor"])
        page = await self.backend.run(
            self.store.list_tree_json,
            repo,
            path,
            recursive=recursive,
            at=at,
            after=after,
            limit=limit,
        )
        next_cursor = None
        if page.more and page.last is not None:
            next_cursor = encode_cursor(page.head, page.last)
        return tree_response(page, next_cursor)

    @endpoint
    async def get_file(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        path = valid_path(request.path_params["path"])
        at = head_param(request.query_params.get("at"), "at")
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
            "X-Repomount-Mtime-Ns": str(entry.mtime_ns),
            "X-Repomount-Type": entry.type,
            "Accept-Ranges": "bytes",
        }
        if_match = request.headers.get("if-match")
        if if_match is not None and not etag_matches(if_match, version):
            raise ApiError(
                "precondition_failed",
                f"{path!r} is at version {version}, not the one in If-Match",
                current_version=version,
            )
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and etag_matches(if_none_match, version):
            return Response(status_code=304, headers=headers)
        try:
            span = parse_range(request.headers.get("range"), entry.size)
        except Unsatisfiable:
            error = ApiError(
                "range_not_satisfiable", f"the range is outside the {entry.size}-byte content"
            )
            headers["Content-Range"] = f"bytes */{entry.size}"
            return error_json(error, headers)
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
            stream_file(blob, start, end), status_code=status, headers=headers, media_type=OCTET
        )

    @endpoint
    async def read(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        await self.backend.run(self.store.head, repo)  # 404 before reading the body
        body = await read_json(self.backend, request)
        paths = read_paths(body)
        at = head_param(body.get("at"), "at")
        head, entries = await self.backend.run(self.store.stat_many, repo, paths, at)
        return StreamingResponse(
            stream_tar(self.backend, paths, entries),
            media_type="application/x-tar",
            headers={"X-Repo-Head": str(head)},
        )

    @endpoint
    async def changes(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        query = request.query_params
        since = head_param(query.get("since"), "since")
        wait = min(float_param(query.get("wait"), "wait"), self.backend.options.max_wait)
        if since is None:
            head = await self.backend.run(self.store.head, repo)
            return json_response({"head": str(head), "changes": []}, head=head)
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
        return json_response({"head": str(found.head), "changes": changes}, head=found.head)

    # --- writing ------------------------------------------------------------------------

    @endpoint
    async def put_file(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        path = writable_path(request.path_params["path"])
        if not _declared_small(request):  # 404 before reading a large body
            await self.backend.run(self.store.head, repo)
        expect = self._expectation(request, allow_create_only=True)
        mode = mode_param(request.headers.get("x-repomount-mode"))
        mtime_ns = mtime_ns_param(request.headers.get("x-repomount-mtime-ns"))
        spool = await spool_body(self.backend, request, blob=True)
        # A small content goes in the commit's own transaction (one worker-thread hop,
        # one sync: most of an editor's save); a file spool is moved in first.
        held = spool.held_content()
        if held is None:
            try:
                await self.backend.run(self.store.add_blob, spool)
            except BaseException:
                self.store.discard_spool(spool)
                raise
        idempotency = None
        if key := request.headers.get("idempotency-key"):
            preconditions = (request.headers.get("if-match"), request.headers.get("if-none-match"))
            what: list[object] = ["put", path, spool.sha256, preconditions, mode]
            if mtime_ns is not None:  # (so a key used before exact times still replays)
                what.append(mtime_ns)
            idempotency = Idempotency(key, fingerprint(what))
        try:
            result = await self.backend.commit(
                repo,
                [Write(path, spool.sha256, expect=expect, mode=mode, mtime_ns=mtime_ns)],
                message=f"PUT {path}",
                idempotency=idempotency,
                contents=None if held is None else {spool.sha256: held},
            )
        except Conflict as conflict:
            raise precondition_failed(path, conflict) from None
        done = result.results[0]
        data = {"head": str(result.head), "path": path, "version": done.version, "size": spool.size}
        status = 201 if done.created else 200
        return json_response(data, status, head=result.head, replayed=result.replayed)

    @endpoint
    async def delete_file(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        path = valid_path(request.path_params["path"])
        expect = self._expectation(request, allow_create_only=False)
        try:
            result = await self.backend.commit(
                repo, [Delete(path, expect=expect)], message=f"DELETE {path}"
            )
        except Conflict as conflict:
            raise precondition_failed(path, conflict) from None
        return json_response({"head": str(result.head)}, head=result.head)

    @endpoint
    async def put_blob(self, request: Request) -> Response:
        sha = request.path_params["sha"]
        if not SHA256_RE.fullmatch(sha):
            raise ApiError("invalid_request", f"{sha!r} is not a lowercase hex SHA-256")
        return await self._store_blob(request, sha)

    async def _store_blob(self, request: Request, sha: str | None) -> Response:
        """One blob, the whole body: named `sha` (the body must match it), or, with
        None, by the SHA-256 of what arrived (an upload that began before its sender
        knew the hash: POST /blobs as application/octet-stream)."""
        head = await self.backend.run(self.store.head, request.path_params["repo"])
        spool = await spool_body(self.backend, request, blob=True)
        sha = sha or spool.sha256
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
        return json_response({"sha256": sha, "size": spool.size}, 201 if new else 200, head=head)

    @endpoint
    async def post_blobs(self, request: Request) -> Response:
        """A pack of blobs: a tar stream of members named by their SHA-256; or, sent as
        application/octet-stream, one blob named by the server."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "application/octet-stream":
            return await self._store_blob(request, None)
        head = await self.backend.run(self.store.head, request.path_params["repo"])
        try:
            result = await receive_pack(self.backend, request)
        except StoreError as error:
            # Refused part way: the rest of the body is never read, so the connection
            # cannot carry another request (the server closes it; say so).
            response = await self.error_response(request, error)
            response.headers["Connection"] = "close"
            return response
        return json_response({"stored": result.stored, "present": result.present}, head=head)

    @endpoint
    async def commit(self, request: Request) -> Response:
        repo = request.path_params["repo"]
        if not _declared_small(request):  # 404 before reading a large body
            await self.backend.run(self.store.head, repo)
        raw = await json_body(self.backend, request)
        # Parsing up to 100,000 operations, storing inline contents, hashing, the commit
        # and writing the answer: all in one worker thread, so that other requests go on,
        # and a small commit (a saved file) pays one thread hop instead of one per step.
        async with parsing_turn(self.backend, raw):
            return await self.backend.committing(repo, partial(_commit, self.store, repo, raw))

    def _expectation(self, request: Request, *, allow_create_only: bool) -> str | None:
        return write_expectation(
            request.headers,
            allow_create_only=allow_create_only,
            require_preconditions=self.backend.options.require_preconditions,
        )

    # --- errors -------------------------------------------------------------------------

    async def error_response(self, request: Request, error: StoreError) -> Response:
        headers = {}
        repo = request.path_params.get("repo")
        if repo is not None:
            try:
                headers["X-Repo-Head"] = str(await self.backend.run(self.store.head, repo))
            except NotFound:
                pass
        return error_json(error, headers)


def _declared_small(request: Request) -> bool:
    """A body that says it is small: read before the repository is looked up (cheaper
    than a thread hop of its own; the commit finds a missing repository anyway)."""
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) <= SMALL_BODY


def _commit(store: Store, repo: str, raw: bytes) -> Response:
    """A commit request's body parsed, carried out and answered (a worker thread)."""
    body = parse_json_object(raw)
    message, author = str_field(body, "message"), str_field(body, "author")
    key = idempotency_key(body)
    operations, inline = parse_operations(body.get("operations"))
    # Bound to what the commit does, not to how its body carries it: a replay after a
    # crash may name another base, or send inline what it first sent as a blob.
    idempotency = None
    if key is not None:
        idempotency = Idempotency(key, fingerprint([_what(op) for op in operations]))
    result = store.commit(
        repo, operations, message=message, author=author, idempotency=idempotency, contents=inline
    )
    results = [{"path": r.path, "version": r.version} for r in result.results]
    data = {"head": str(result.head), "results": results}
    return json_response(data, 201, head=result.head, replayed=result.replayed)


def _what(op: Operation) -> list[object]:
    """What an operation does, for its commit's idempotency fingerprint. A write's
    `mtime_ns` counts only when set, so a key from before exact times still replays."""
    kind: type = type(op)
    what = [kind.__name__, *(getattr(op, name) for name in _field_names(kind))]
    if isinstance(op, Write) and op.mtime_ns is None:
        what.pop()
    return what


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    """An operation's fields, in order. (Its values are plain: the same as
    dataclasses.astuple gives, without its deep copy, which cost more than the commit.)"""
    return tuple(f.name for f in dataclasses.fields(cls))
