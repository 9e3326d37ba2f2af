"""The Relace Repos API (`/repo...` under a base URL ending in /v1) over the shared store.

Faithful to the wire contract the official `relace` SDK speaks (docs/remotes.md,
"Relace"): FastAPI-style errors (`{"detail": ...}`), `repo_head` tokens of 40 hex
digits, updates applied in three phases and atomically, no empty directories, no
conditional writes, and a per-repo lock that answers 423 instead of waiting.

Repo ids: a repo created here gets a UUID (which is also its store name); any store repo
is reachable by its store name, so a repo made through the native API is a Relace repo
too. Relace's metadata lives in the store's repo attributes under `relace.*`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import wraps
from typing import Any, BinaryIO

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from repomount.server.backend import Backend
from repomount.server.body import REFUSAL_STATUS, read_json, spool_body
from repomount.server.errors import ApiError
from repomount.server.faces import relace_requests as req
from repomount.server.faces.relace_clone import clone_body, text_files
from repomount.server.faces.relace_model import (
    DiffDelete,
    DiffOp,
    DiffWrite,
    FileRef,
    Plan,
    RelaceError,
    copy_of,
    head_of_token,
    head_token,
    invalid,
    normalize_path,
    plan_diff,
    plan_files,
)
from repomount.server.inline import store_contents
from repomount.server.jsonresponse import JSONResponse
from repomount.server.store import (
    ABSENT,
    BlobSpool,
    Conflict,
    DirectoryNotEmpty,
    Entry,
    Gone,
    NotFound,
    PathConflict,
    UnknownBlob,
    Write,
)

MAX_UPLOAD = 50 << 20  # the service refuses bigger uploads with 413
PAGE = 10_000  # store listing page size when taking a snapshot
RACE_RETRIES = 5  # re-plans after a commit lost a race with another writer, then 423
CHUNK = 256 << 10

META = "relace.metadata"  # JSON object of string values
AUTO_INDEX = "relace.auto_index"  # "true" / "false"
META_TIME = "relace.metadata_updated_at"  # ISO time of the last metadata change

Handler = Callable[["RelaceApi", Request], Awaitable[Response]]
_RACES = (Conflict, DirectoryNotEmpty, PathConflict, UnknownBlob)


def relace_routes(backend: Backend) -> list[BaseRoute]:
    """The routes of the face (mount them under "/relace/v1")."""
    api = RelaceApi(backend)
    file = "/repo/{repo_id}/file/{file_path:path}"
    return [
        Route("/repo", api.create, methods=["POST"]),
        Route("/repo", api.list_repos, methods=["GET"]),
        Route("/repo/{repo_id}", api.get, methods=["GET"]),
        Route("/repo/{repo_id}", api.delete, methods=["DELETE"]),
        Route("/repo/{repo_id}/update", api.update, methods=["POST"]),
        Route("/repo/{repo_id}/clone", api.clone, methods=["GET"]),
        Route(file, api.download, methods=["GET"]),
        Route(file, api.upload, methods=["PUT"]),
        Route(file, api.delete_file, methods=["DELETE"]),
    ]


def endpoint(fn: Handler) -> Handler:
    """Every refusal as `{"detail": ...}` with Relace's status codes."""

    @wraps(fn)
    async def handler(self: RelaceApi, request: Request) -> Response:
        try:
            return await fn(self, request)
        except RelaceError as error:
            return JSONResponse({"detail": error.detail}, status_code=error.status)
        except ApiError as error:  # from the shared body readers
            if error.code in REFUSAL_STATUS:
                status = REFUSAL_STATUS[error.code]
                return JSONResponse({"detail": error.message}, status_code=status)
            if error.code == "bad_json":
                detail = [{"type": "json_invalid", "loc": ["body"], "msg": error.message}]
                return JSONResponse({"detail": detail}, status_code=422)
            return JSONResponse({"detail": error.message}, status_code=400)
        except NotFound as error:  # the repo went away in the middle of a request
            return JSONResponse({"detail": f"Repo not found ({error.message})"}, status_code=404)

    return handler


class RelaceApi:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.store = backend.store
        self._locks: dict[str, trio.Lock] = {}

    # --- repositories -------------------------------------------------------------------

    @endpoint
    async def create(self, request: Request) -> Response:
        body = await self._json(request)
        metadata = req.metadata(body.get("metadata"))
        auto_index = body.get("auto_index", False)
        if not isinstance(auto_index, bool):
            raise invalid(["body", "auto_index"], "Input should be a valid boolean", "bool_type")
        source = body.get("source")
        files: dict[str, FileRef] = {}
        if source is not None:
            kind = req.source_kind(source, ("files", "git", "relace"))
            if kind == "git":
                raise RelaceError(422, "git sources are not supported by this server")
            if kind == "files":
                files = await self._store_contents(await self.backend.run(req.files, source))
            else:
                template = await self._resolve(req.str_field(source, "repo_id", ["body", "source"]))
                _, entries = await self.backend.run(self._snapshot, template)
                files = copy_of(entries)
                if source.get("copy_metadata") is True and metadata is None:
                    metadata = _load_metadata(
                        await self.backend.run(self.store.repo_attrs, template)
                    )
        repo = str(uuid.uuid4())
        await self.backend.run(self.store.create_repo, repo)
        try:
            attrs = {AUTO_INDEX: "true" if auto_index else "false"}
            if metadata is not None:
                attrs[META] = json.dumps(metadata)
            await self.backend.run(self.store.set_repo_attrs, repo, attrs)
            head, _ = await self._apply(repo, lambda entries: plan_files(entries, files))
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.backend.delete_repo(repo)
            raise
        return JSONResponse({"repo_id": repo, "repo_head": head_token(repo, head)})

    @endpoint
    async def list_repos(self, request: Request) -> Response:
        query = request.query_params
        start = req.int_query(query, "page_start", 0, low=0)
        size = req.int_query(query, "page_size", 100, low=1, high=100)
        order_by = query.get("order_by", "created_at")
        if order_by not in ("created_at", "updated_at"):
            raise invalid(
                ["query", "order_by"],
                "Input should be 'created_at' or 'updated_at'",
                "literal_error",
                order_by,
            )
        descending = req.bool_query(query, "order_descending")
        wanted = req.filter_query(query.get("filter_metadata"))
        after = req.time_query(query, "created_after")
        before = req.time_query(query, "created_before")
        items = await self.backend.run(self._all_metadata)
        items = [
            item
            for item in items
            if all((item["metadata"] or {}).get(k) == v for k, v in wanted.items())
            and (after is None or req.time(item["created_at"]) > after)
            and (before is None or req.time(item["created_at"]) < before)
        ]
        items.sort(key=lambda i: (i[order_by], i["repo_id"]), reverse=descending)
        page = items[start : start + size]
        data: dict[str, Any] = {"items": page, "total_items": len(items)}
        if start + size < len(items):
            data["next_page"] = start + size
        return JSONResponse(data)

    @endpoint
    async def get(self, request: Request) -> Response:
        repo = await self._repo(request)
        return JSONResponse(await self.backend.run(self._metadata_of, repo))

    @endpoint
    async def delete(self, request: Request) -> Response:
        repo = await self._repo(request)
        async with self._locked(repo):
            await self.backend.delete_repo(repo)
        self._locks.pop(repo, None)
        return Response(status_code=204)

    # --- reading ------------------------------------------------------------------------

    @endpoint
    async def clone(self, request: Request) -> Response:
        repo = await self._repo(request)
        at = None
        commit = request.query_params.get("commit")
        if commit:
            at = head_of_token(repo, commit)
            if at is None:
                raise RelaceError(404, f"Commit not found: {commit}")
        files = await self.backend.run(self._files_at, repo, at)
        return StreamingResponse(clone_body(self.backend, files), media_type="application/json")

    def _files_at(self, repo: str, at: int | None) -> list[Entry]:
        """The repo's files at `at` (the head by default); the stream leaves out those
        that are not UTF-8 text, as the service does with binary files (the reference
        leaves the exact rule open)."""
        try:
            _, entries = self._snapshot(repo, at)
        except (Gone, NotFound) as error:
            if at is None:
                raise
            raise RelaceError(404, f"Commit not found: {error.message}") from None
        return text_files(entries)

    @endpoint
    async def download(self, request: Request) -> Response:
        repo = await self._repo(request)
        path = normalize_path(request.path_params["file_path"])
        _, entry = await self.backend.run(self.store.stat, repo, path)
        if entry is None or entry.type != "file" or entry.version is None:
            raise RelaceError(404, f"File not found: {path}")
        blob = await self.backend.run(self.store.open_blob, entry.version)
        return StreamingResponse(
            _stream(blob),
            media_type="application/octet-stream",
            headers={"Content-Length": str(entry.size)},
        )

    # --- writing ------------------------------------------------------------------------

    @endpoint
    async def update(self, request: Request) -> Response:
        repo = await self._repo(request)
        body = await self._json(request)
        source, metadata = body.get("source"), req.metadata(body.get("metadata"))
        if source is None and metadata is None:
            raise RelaceError(422, "Either source or metadata must be provided")
        ops: list[DiffOp | req.TextWrite] | None = None
        files: dict[str, str] | None = None
        if source is not None:
            kind = req.source_kind(source, ("files", "diff", "git"))
            if kind == "git":
                raise RelaceError(400, "git sources are not supported by this server")
            if kind == "files":
                files = await self.backend.run(req.files, source)
            else:
                ops = await self.backend.run(req.diff_ops, source)
        async with self._locked(repo):
            changed: list[str] = []
            if files is not None:
                refs = await self._store_contents(files)
                head, plan = await self._apply(repo, lambda e: plan_files(e, refs))
                changed = plan.changed_files
            elif ops is not None:
                diff = await self._store_diff_contents(ops)
                head, plan = await self._apply(repo, lambda e: plan_diff(e, diff))
                changed = plan.changed_files
            else:
                head = await self.backend.run(self.store.head, repo)
            if metadata is not None:
                now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                attrs = {META: json.dumps(metadata), META_TIME: now}
                await self.backend.run(self.store.set_repo_attrs, repo, attrs)
        return _repo_info(repo, head, changed)

    @endpoint
    async def upload(self, request: Request) -> Response:
        repo = await self._repo(request)
        path = normalize_path(request.path_params["file_path"], write=True)
        # The lock is held from the first byte of the body: a slow upload keeps the repo
        # busy, and other writers get 423 meanwhile.
        async with self._locked(repo):
            spool = await self._spool(request)
            write = DiffWrite(path, spool.sha256)
            head, plan = await self._apply(repo, lambda e: plan_diff(e, [write]))
        created = any(
            isinstance(op, Write) and op.path == path and op.expect == ABSENT
            for op in plan.operations
        )
        return _repo_info(repo, head, [path], 201 if created else 200)

    @endpoint
    async def delete_file(self, request: Request) -> Response:
        repo = await self._repo(request)
        path = normalize_path(request.path_params["file_path"])
        async with self._locked(repo):
            head, _ = await self._apply(repo, lambda e: plan_diff(e, [DiffDelete(path)]))
        return _repo_info(repo, head, [path])

    async def _apply(
        self, repo: str, plan_for: Callable[[dict[str, Entry]], Plan]
    ) -> tuple[int, Plan]:
        """Plan on a fresh snapshot and commit; a commit refused because someone else
        changed the repo in between (through another face) is planned again."""
        for _ in range(RACE_RETRIES):
            head, entries = await self.backend.run(self._snapshot, repo)
            # Planning is proportional to the repo's entries and their depth: a thread.
            plan = await self.backend.run(plan_for, entries)
            if not plan.operations:
                return head, plan
            try:
                result = await self.backend.commit(repo, plan.operations, message="relace update")
            except _RACES:
                continue
            return result.head, plan
        raise RelaceError(423, "Repository is busy with other writes; retry")

    # --- helpers ------------------------------------------------------------------------

    @asynccontextmanager
    async def _locked(self, repo: str) -> AsyncIterator[None]:
        """The per-repo lock of the service: taken at once, or 423 (never queued)."""
        lock = self._locks.setdefault(repo, trio.Lock())
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            raise RelaceError(
                423, "Repository is locked by another operation; it unlocks automatically"
            ) from None
        try:
            yield
        finally:
            lock.release()

    async def _repo(self, request: Request) -> str:
        return await self._resolve(request.path_params["repo_id"])

    async def _resolve(self, repo_id: str) -> str:
        return await self.backend.run(self._resolve_sync, repo_id)

    def _resolve_sync(self, repo_id: str) -> str:
        """The store name of a repo id: the name itself, or a UUID in canonical form.
        Anything else is the 422 FastAPI gives for a path parameter that is no UUID."""
        try:
            canonical: str | None = str(uuid.UUID(repo_id))
        except ValueError:
            canonical = None
        for name in dict.fromkeys([repo_id, canonical]):
            if name is None:
                continue
            try:
                self.store.head(name)
            except NotFound:
                continue
            return name
        if canonical is None:
            raise invalid(
                ["path", "repo_id"],
                "Input should be a valid UUID",
                "uuid_parsing",
                repo_id,
            )
        raise RelaceError(404, "Repo not found")

    def _snapshot(self, repo: str, at: int | None = None) -> tuple[int, dict[str, Entry]]:
        """Every entry of the repo at one head (the current one by default)."""
        entries: dict[str, Entry] = {}
        after = None
        while True:
            listing = self.store.list_tree(repo, "", recursive=True, at=at, after=after, limit=PAGE)
            at = listing.head
            entries.update((e.path, e) for e in listing.entries)
            if not listing.more or not listing.entries:
                return at, entries
            after = listing.entries[-1].path

    def _all_metadata(self) -> list[dict[str, Any]]:
        items = []
        for info in self.store.list_repos():
            try:
                items.append(self._metadata_of(info.name))
            except NotFound:  # deleted meanwhile
                continue
        return items

    def _metadata_of(self, repo: str) -> dict[str, Any]:
        info = self.store.repo_info(repo)
        attrs = self.store.repo_attrs(repo)
        updated = max(filter(None, [info.updated_at, attrs.get(META_TIME), info.created_at]))
        return {
            "repo_id": repo,
            "created_at": info.created_at,
            "updated_at": updated,
            "metadata": _load_metadata(attrs),
            "auto_index": attrs.get(AUTO_INDEX) == "true",
        }

    async def _json(self, request: Request) -> dict[str, Any]:
        try:
            return await read_json(self.backend, request)
        except ApiError as error:
            if error.code == "invalid_request":  # not an object
                raise invalid(["body"], "Input should be a valid dictionary", "dict_type") from None
            raise

    def _add_texts(self, texts: Sequence[str]) -> list[str]:
        # JSON may carry lone surrogates: kept as the bytes they would encode to.
        return store_contents(self.store, (t.encode("utf-8", "surrogatepass") for t in texts))

    async def _store_contents(self, files: Mapping[str, str]) -> dict[str, FileRef]:
        blobs = await self.backend.run(self._add_texts, list(files.values()))
        return {path: FileRef(blob, None) for path, blob in zip(files, blobs, strict=True)}

    async def _store_diff_contents(self, ops: Sequence[DiffOp | req.TextWrite]) -> list[DiffOp]:
        texts = [op.content for op in ops if isinstance(op, req.TextWrite)]
        blobs = iter(await self.backend.run(self._add_texts, texts))
        return [
            DiffWrite(op.path, next(blobs)) if isinstance(op, req.TextWrite) else op for op in ops
        ]

    async def _spool(self, request: Request) -> BlobSpool:
        """The upload body in a spool file, within the service's upload limit."""
        spool = await spool_body(self.backend, request, limit=MAX_UPLOAD)  # (413: endpoint)
        try:
            await self.backend.run(self.store.add_blob, spool)
        except BaseException:
            self.store.discard_spool(spool)
            raise
        return spool


def relace_bad_url(part: str, message: str) -> JSONResponse:
    """The 422 of a URL the server refuses to decode (server/urlguard.py)."""
    error = invalid([part], message, "value_error")
    return JSONResponse({"detail": error.detail}, status_code=error.status)


def _load_metadata(attrs: Mapping[str, str]) -> dict[str, str] | None:
    raw = attrs.get(META)
    return None if raw is None else dict(json.loads(raw))


# --- responses --------------------------------------------------------------------------


def _repo_info(repo: str, head: int, changed: list[str], status: int = 200) -> JSONResponse:
    body = {"repo_id": repo, "repo_head": head_token(repo, head), "changed_files": changed}
    return JSONResponse(body, status_code=status)


async def _stream(blob: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await trio.to_thread.run_sync(blob.read, CHUNK):
            yield chunk
    finally:
        blob.close()
