"""Sentry's release files API (the legacy "release artifacts") over the shared store,
mounted at /api/0: the paths `sentry-cli` uses, which accepts no URL prefix.

Faithful to the wire contract `sentry-cli` 2.x speaks (docs/remotes.md, "Sentry"):
project- and organization-level routes with the same shapes, `{"detail": ...}` errors,
`Link` pagination with Sentry's cursors (100 a page, none past 20,000), no
preconditions anywhere, and `chunk-upload` answering 404 so that clients take the
legacy upload path. How releases and files map onto the store: sentry_model.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from urllib.parse import urlencode

import trio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from repomount.server.backend import Backend
from repomount.server.body import REFUSAL_STATUS, read_json, spool_body
from repomount.server.errors import ApiError
from repomount.server.faces import sentry_form as form
from repomount.server.faces import sentry_model as model
from repomount.server.faces import sentry_wire as wire
from repomount.server.faces.sentry_wire import SentryError, not_found
from repomount.server.origin import origin
from repomount.server.store import BlobSpool, NotFound

CHUNK = 256 << 10
SCOPES = ["org:read", "project:read", "project:write", "project:releases", "project:admin"]

Handler = Callable[["SentryFace", Request], Awaitable[Response]]


def sentry_routes(backend: Backend) -> list[BaseRoute]:
    """The routes (mount them under "/api/0")."""
    face = SentryFace(backend)
    routes: list[BaseRoute] = [
        Route("/", face.auth_info, methods=["GET"]),
        Route("/organizations/{org}/chunk-upload/", face.no_chunk_upload),
        Route("/projects/{org}/{project}/releases/", face.create_release, methods=["POST"]),
        Route("/organizations/{org}/releases/", face.create_release, methods=["POST"]),
        Route("/projects/{org}/{project}/files/source-maps/", face.delete_all, methods=["DELETE"]),
    ]
    for level in ("/projects/{org}/{project}", "/organizations/{org}"):
        release = level + "/releases/{version}/"
        routes += [
            Route(release, face.get_release, methods=["GET"]),
            Route(release + "files/", face.list_files, methods=["GET"]),
            Route(release + "files/", face.upload, methods=["POST"]),
            Route(release + "files/{file_id}/", face.get_file, methods=["GET"]),
            Route(release + "files/{file_id}/", face.rename, methods=["PUT"]),
            Route(release + "files/{file_id}/", face.delete, methods=["DELETE"]),
        ]
    return [Mount("", app=_SentryErrors(Router(routes=routes, redirect_slashes=False)))]


class _SentryErrors:
    """Unknown paths (404) and methods a route does not have (405) in Sentry's words."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except HTTPException as error:
            if error.status_code == 405:
                body = {"detail": f'Method "{scope.get("method")}" not allowed.'}
            else:
                body = {"detail": wire.NOT_FOUND if error.status_code == 404 else error.detail}
            response = JSONResponse(body, status_code=error.status_code, headers=error.headers)
            await response(scope, receive, send)


def endpoint(fn: Handler) -> Handler:
    """Every refusal as Sentry words it: `{"detail": ...}` (or a serializer's fields)."""

    @wraps(fn)
    async def handler(self: SentryFace, request: Request) -> Response:
        try:
            return await fn(self, request)
        except SentryError as error:
            return error.response()
        except ApiError as error:  # from the shared body readers
            status = REFUSAL_STATUS.get(error.code, 400)
            prefix = "JSON parse error - " if error.code == "bad_json" else ""
            return JSONResponse({"detail": prefix + error.message}, status_code=status)
        except NotFound:  # the release's repository went away in the middle
            return not_found().response()

    return handler


class SentryFace:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.store = backend.store

    # --- the API's root, and chunked uploads (not here) ---------------------------------------

    @endpoint
    async def auth_info(self, request: Request) -> Response:
        user = {"id": "1", "name": "repomount", "username": "repomount", "email": ""}
        return JSONResponse({"version": "0", "auth": {"scopes": SCOPES}, "user": user})

    @endpoint
    async def no_chunk_upload(self, request: Request) -> Response:
        raise not_found()  # sentry-cli 2.x then uploads release files one by one

    # --- releases ----------------------------------------------------------------------

    @endpoint
    async def create_release(self, request: Request) -> Response:
        body = await read_json(self.backend, request)
        version = wire.check_version(body.get("version"))
        project = request.path_params.get("project")
        projects = body.get("projects", [] if project is None else [project])
        if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
            raise wire.field_error("projects", "Expected a list of items.")
        if project is not None:
            projects = [project]
        elif not projects:
            raise wire.field_error("projects", "This field is required.")
        release, changed = await self.backend.run(
            model.create_release, self.store, version, projects
        )
        data = wire.release_json(version, release.created, release.projects or projects)
        return JSONResponse(data, status_code=201 if changed else 208)

    @endpoint
    async def get_release(self, request: Request) -> Response:
        release = await self._release(request)
        projects = release.projects
        if projects is None:  # every project: name the one asked through, if any
            projects = [p for p in [request.path_params.get("project")] if p]
        return JSONResponse(wire.release_json(release.version, release.created, projects))

    async def _release(self, request: Request) -> model.Release:
        """The release of the URL, or 404 (also when not linked to the URL's project)."""
        version = request.path_params["version"]
        release = await self.backend.run(model.find_release, self.store, version)
        if release is None or not release.linked(request.path_params.get("project")):
            raise not_found()
        return release

    # --- files -------------------------------------------------------------------------

    @endpoint
    async def list_files(self, request: Request) -> Response:
        release = await self._release(request)
        query = request.query_params
        start, page, limit = wire.page_of(query)
        files = await self.backend.run(model.release_files, self.store, release)
        queries, checksums = query.getlist("query"), query.getlist("checksum")
        files = [f for f in files if wire.matches(f, queries, checksums)]
        shown = files[start : start + limit]
        others = urlencode([(k, v) for k, v in query.multi_items() if k != "cursor"])
        link = wire.link_header(
            # (this server as the socket says, not the Host header: server/origin.py)
            origin(request) + request.url.path,
            others,
            page,
            limit,
            more=len(files) > start + limit,
        )
        return JSONResponse([f.json() for f in shown], headers={"Link": link})

    @endpoint
    async def get_file(self, request: Request) -> Response:
        release = await self._release(request)
        f = await self.backend.run(
            model.find_file, self.store, release, request.path_params["file_id"]
        )
        if "download" not in request.query_params:
            return JSONResponse(f.json())
        blob = await self.backend.run(self.store.open_blob, f.sha256)
        headers = {
            "Content-Length": str(f.size),
            "Content-Disposition": wire.content_disposition(f.basename),
        }
        # Sentry looks the type up as "content-type" among headers stored as
        # "Content-Type": its downloads come as application/octet-stream.
        return StreamingResponse(
            _stream(blob.read, blob.close), media_type="application/octet-stream", headers=headers
        )

    @endpoint
    async def upload(self, request: Request) -> Response:
        release = await self._release(request)
        raw = await spool_body(self.backend, request)
        try:
            upload = await self.backend.run(
                self._read_upload, raw, request.headers.get("content-type", "")
            )
        finally:
            self.store.discard_spool(raw)
        try:
            added = await self.backend.run(model.add_file, self.store, release, upload)
        finally:
            self.backend.hub.notify(release.dists.get(upload.dist or "", release.repo))
            self.backend.hub.notify(release.repo)
        return JSONResponse(added.json(), status_code=201)

    def _read_upload(self, raw: BlobSpool, content_type: str) -> model.Upload:
        """(In a worker thread.) The upload's parts, checked in Sentry's order; the file's
        content stored as a blob."""
        raw.close()
        try:
            parts = form.parse_form(raw.path, content_type)
        except ValueError as error:
            if not content_type.startswith("multipart/"):
                raise SentryError(400, "Missing uploaded file") from None
            raise SentryError(400, f"Multipart form parse error - {error}") from None
        part = parts.files.get("file")
        if part is None:
            raise SentryError(400, "Missing uploaded file")
        path = wire.check_upload_name(parts.first("name") or part.filename or "")
        headers = wire.parse_headers(part.content_type, parts.fields.get("header", []))
        dist = parts.first("dist") or None
        if dist is not None:
            wire.check_dist(dist)
        spool = self.store.new_spool()
        sha1 = hashlib.sha1()

        def write(chunk: bytes) -> None:
            spool.write(chunk)
            sha1.update(chunk)

        try:
            form.copy_part(raw.path, part, write)
            self.store.add_blob(spool)
        except BaseException:
            self.store.discard_spool(spool)
            raise
        return model.Upload(path, dist, spool.sha256, sha1.hexdigest(), spool.size, headers)

    @endpoint
    async def rename(self, request: Request) -> Response:
        release = await self._release(request)
        file_id = request.path_params["file_id"]
        if not file_id.isdigit():
            raise SentryError(400, "Can only update release files with integer IDs")
        f = await self.backend.run(model.find_file, self.store, release, file_id)
        _, path = wire.check_new_name(await read_json(self.backend, request))
        try:
            renamed = await self.backend.run(model.rename_file, self.store, f, path)
        finally:
            self.backend.hub.notify(f.repo)
        return JSONResponse(renamed.json())

    @endpoint
    async def delete(self, request: Request) -> Response:
        release = await self._release(request)
        f = await self.backend.run(
            model.find_file, self.store, release, request.path_params["file_id"]
        )
        try:
            await self.backend.run(model.delete_file, self.store, f)
        finally:
            self.backend.hub.notify(f.repo)
        return Response(status_code=204)

    @endpoint
    async def delete_all(self, request: Request) -> Response:
        """`sentry-cli files delete --all`: every file of the release `?name=`."""
        version = request.query_params.get("name")
        if not version:
            raise not_found()
        release = await self.backend.run(model.find_release, self.store, version)
        if release is None or not release.linked(request.path_params["project"]):
            raise not_found()
        try:
            await self.backend.run(model.delete_all, self.store, release)
        finally:
            for _, repo in release.sources():
                self.backend.hub.notify(repo)
        return Response(status_code=204)


async def _stream(read: Callable[[int], bytes], close: Callable[[], None]) -> AsyncIterator[bytes]:
    try:
        while chunk := await trio.to_thread.run_sync(read, CHUNK):
            yield chunk
    finally:
        close()


def sentry_bad_url(part: str, message: str) -> JSONResponse:
    """The answer to a URL the server refuses to decode (server/urlguard.py), in
    Sentry's shape: a 400 with a `detail`."""
    return JSONResponse({"detail": f"invalid {part}: {message}"}, status_code=400)
