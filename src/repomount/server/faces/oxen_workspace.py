"""Oxen workspaces: changes staged against one commit, then committed to a branch.

A workspace lives in the server's memory (a restart forgets it and what it staged; its
content is kept by the blob collector's grace period until then). The client chooses
its id. Staged files are blobs of the store; the commit is oxen_commit.commit_staged,
which refuses with 409 when a staged path changed on the branch since the workspace's
commit ("Workspace is behind").
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from repomount.paths import ancestors_of
from repomount.server.faces import oxen_wire as wire
from repomount.server.faces.oxen_commit import Staged, changed_since, commit_staged
from repomount.server.faces.oxen_face import (
    MAX_BODY,
    Face,
    clean_path,
    endpoint,
    join_path,
    written_path,
)
from repomount.server.faces.oxen_model import DEFAULT_BRANCH, OxenError, bad_request
from repomount.server.faces.oxen_repos import Ref
from repomount.server.faces.oxen_upload import store_parts

MAX_WORKSPACES = 10_000


@dataclass
class Workspace:
    id: str
    repo: str  # the store repository of the Oxen repository
    branch: str
    base: Ref
    name: str | None
    created_at: float
    staged: Staged = field(default_factory=Staged)


def _missing(wid: str) -> Response:
    return wire.described_error(404, "resource_not_found", f"Workspace not found: {wid}")


class Workspaces:
    def __init__(self, face: Face) -> None:
        self.face = face
        self.repos = face.repos
        face.workspaces = self  # type: ignore[attr-defined]  # read by downloads
        self.all: dict[str, Workspace] = {}

    def routes(self, r: str) -> list[BaseRoute]:
        w = f"{r}/workspaces"
        one = f"{w}/{{wid}}"
        return [
            Route(w, self.list_all, methods=["GET"]),
            Route(w, self.get_or_create, methods=["PUT", "POST"]),
            Route(w, self.clear, methods=["DELETE"]),
            Route(one, self.get, methods=["GET"]),
            Route(one, self.delete, methods=["DELETE"]),
            Route(f"{one}/validate", self.validate, methods=["POST"]),
            Route(f"{one}/files", self.remove_files, methods=["DELETE"]),
            Route(f"{one}/files/{{path:path}}", self.add_files, methods=["POST"]),
            Route(f"{one}/files/{{path:path}}", self.read_file, methods=["GET"]),
            Route(f"{one}/files/{{path:path}}", self.unstage, methods=["DELETE"]),
            Route(f"{one}/files/{{path:path}}", self.move_staged, methods=["PATCH"]),
            Route(f"{one}/changes", self.unstage_many, methods=["DELETE"]),
            Route(f"{one}/changes", self.changes, methods=["GET"]),
            Route(f"{one}/changes/{{path:path}}", self.unstage, methods=["DELETE"]),
            Route(f"{one}/changes/{{path:path}}", self.changes, methods=["GET"]),
            Route(f"{one}/merge/{{branch:path}}", self.mergeable, methods=["GET"]),
            Route(f"{one}/merge/{{branch:path}}", self.commit, methods=["POST"]),
            Route(f"{one}/commit/{{branch:path}}", self.commit, methods=["POST"]),
        ]

    async def _find(self, request: Request) -> Workspace | None:
        repo = await self.face.repo(request)
        ws = self.all.get(request.path_params["wid"])
        return ws if ws is not None and ws.repo == repo else None

    async def _json(self, ws: Workspace) -> dict[str, Any]:
        commit = await self.face.run(self.repos.commit, ws.base)
        return {
            "id": ws.id,
            "name": ws.name,
            "commit": commit.json(),
            "created_at": wire.timestamp(ws.created_at),
        }

    # --- the workspaces -----------------------------------------------------------------

    @endpoint
    async def list_all(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        name = request.query_params.get("name")
        found = [
            await self._json(ws)
            for ws in self.all.values()
            if ws.repo == repo and (name is None or ws.name == name)
        ]
        return wire.ok(workspaces=found)

    @endpoint
    async def get_or_create(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        body = await self.face.json(request)
        wid, branch = body.get("workspace_id"), body.get("branch_name") or DEFAULT_BRANCH
        name = body.get("name")
        if not isinstance(wid, str) or not wid or "/" in wid or not isinstance(branch, str):
            raise bad_request("Invalid request body", "workspace_id and branch_name are needed")
        if name is not None and not isinstance(name, str):
            raise bad_request("Invalid request body", "name must be a string")
        existing = self.all.get(wid)
        if existing is not None:
            if existing.repo != repo:
                raise OxenError(409, "conflict", f"Workspace id {wid!r} is in use")
            return wire.ok(workspace=await self._json(existing))
        if len(self.all) >= MAX_WORKSPACES:
            raise OxenError(429, "bad_request", "Too many workspaces; delete some")
        async with self.face.lock(repo):

            def base() -> Ref:
                if branch == DEFAULT_BRANCH and self.repos.is_empty(repo):
                    return self.repos.make_root(repo)  # the initial commit
                if branch not in self.repos.branches(repo):
                    raise bad_request(f"Branch not found: {branch}")
                return self.repos.branch(repo, branch)

            ref = await self.face.run(base)
        ws = Workspace(wid, repo, branch, ref, name, time.time())
        self.all[wid] = ws
        return wire.ok("resource_created", workspace=await self._json(ws))

    @endpoint
    async def get(self, request: Request) -> Response:
        ws = await self._find(request)
        if ws is None:
            return _missing(request.path_params["wid"])
        return wire.ok(workspace=await self._json(ws))

    @endpoint
    async def delete(self, request: Request) -> Response:
        ws = await self._find(request)
        if ws is None:
            return _missing(request.path_params["wid"])
        del self.all[ws.id]
        # (resource_created: the real server's quirk)
        return wire.ok("resource_created", workspace=await self._json(ws))

    @endpoint
    async def clear(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        for wid in [w.id for w in self.all.values() if w.repo == repo]:
            del self.all[wid]
        return wire.ok("resource_deleted")

    @endpoint
    async def validate(self, request: Request) -> Response:
        if await self._find(request) is None:
            return _missing(request.path_params["wid"])
        body = await self.face.json(request)
        size = body.get("size", 0)
        if not isinstance(size, int) or size < 0:
            raise bad_request("Invalid request body", "size must be a number of bytes")
        if size > self.face.backend.options.max_file_size:
            raise OxenError(413, "bad_request", f"{size} bytes is over this server's limit")
        return wire.ok()

    # --- staging ------------------------------------------------------------------------

    @endpoint
    async def add_files(self, request: Request) -> Response:
        ws = await self._find(request)
        if ws is None:
            return _missing(request.path_params["wid"])
        directory = clean_path(request.path_params["path"])
        form = await self.face.form(request)
        limit = self.face.backend.options.max_file_size

        def store() -> tuple[list[str], list[str], Response]:
            """In a worker thread: work that grows with the parts (a form of 470,000
            tiny ones took the event loop ~1 s here, every other request waiting)."""
            parts = [
                p
                for p in form
                if p.name in ("file[]", "file", "files[]") and p.filename is not None
            ]
            if not parts:
                raise bad_request("No files given", "send `file[]` parts")
            paths = [join_path(directory, p.filename or "") for p in parts]
            # All parts together may unpack to MAX_BODY, as a body may hold: gzip parts
            # go to spool files as they unpack (oxen_upload.py), but take disk and time.
            hashes = store_parts(self.face.store, parts, limit, MAX_BODY)
            for sha, xxh3 in hashes:
                self.repos.remember(sha, xxh3)  # (under its own lock)
            answer = wire.ok("resource_created", paths=paths)
            return paths, [sha for sha, _ in hashes], answer

        paths, blobs, answer = await self.face.run(store)
        for path, blob in zip(paths, blobs, strict=True):
            ws.staged.adds[path] = blob
        return answer

    @endpoint
    async def remove_files(self, request: Request) -> Response:
        ws = await self._find(request)
        if ws is None:
            return _missing(request.path_params["wid"])
        paths = await self._paths(request)

        def exists() -> list[bool]:
            _, found = self.face.store.stat_many(ws.base.store, paths, at=ws.base.seq)
            return [e is not None for e in found]

        present = await self.face.run(exists) if paths else []
        missing = []
        for path, there in zip(paths, present, strict=True):
            if there:  # (a file staged there too is written after the removal)
                ws.staged.removes.add(path)
            elif ws.staged.adds.pop(path, None) is None:  # only staged: unstaged
                missing.append(path)
        if missing:
            body = {"status": "error", "status_message": "resource_not_found", "paths": missing}
            return Response(json.dumps(body), status_code=206, media_type="application/json")
        return wire.ok("resource_deleted", paths=paths)

    async def _paths(self, request: Request) -> list[str]:
        data = await self.face.json_value(request, b"[]")
        if isinstance(data, dict):
            data = data.get("paths", [])
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise bad_request("Invalid request body", "expected a JSON array of paths")
        return [clean_path(p) for p in data if p.strip("/")]

    @endpoint
    async def unstage(self, request: Request) -> Response:
        ws = await self._find(request)
        if ws is None:
            return _missing(request.path_params["wid"])
        self._unstage(ws, clean_path(request.path_params["path"]))
        return wire.ok("resource_deleted")

    @endpoint
    async def unstage_many(self, request: Request) -> Response:
        ws = await self._find(request)
        if ws is None:
            return _missing(request.path_params["wid"])
        for path in await self._paths(request):
            self._unstage(ws, path)
        return wire.ok("resource_deleted")

    def _unstage(self, ws: Workspace, path: str) -> None:
        prefix = f"{path}/" if path else ""
        for p in [p for p in ws.staged.adds if p == path or p.startswith(prefix)]:
            del ws.staged.adds[p]
        for p in [p for p in ws.staged.removes if p == path or p.startswith(prefix)]:
            ws.staged.removes.discard(p)

    @endpoint
    async def move_staged(self, request: Request) -> Response:
        ws = await self._find(request)
        if ws is None:
            return _missing(request.path_params["wid"])
        path = clean_path(request.path_params["path"])
        new_path = (await self.face.json(request)).get("new_path")
        if not isinstance(new_path, str):
            raise bad_request("Invalid request body", "new_path is required")
        new_path = written_path(new_path)
        if path not in ws.staged.adds:
            raise OxenError(404, "resource_not_found", f"{path!r} is not staged")
        if new_path in ws.staged.adds:
            raise OxenError(409, "conflict", f"{new_path!r} is already staged")
        ws.staged.adds[new_path] = ws.staged.adds.pop(path)
        return wire.ok("resource_updated")

    @endpoint
    async def read_file(self, request: Request) -> Response:
        ws = await self._find(request)
        if ws is None:
            return _missing(request.path_params["wid"])
        return await self.face.send_file(request, ws.repo, f"{ws.id}/{request.path_params['path']}")

    @endpoint
    async def changes(self, request: Request) -> Response:
        ws = await self._find(request)
        if ws is None:
            return _missing(request.path_params["wid"])
        query = request.query_params
        page = wire.int_param(query, "page", 1, 1, 1 << 30)
        size = wire.int_param(query, "page_size", 100, 1, 10_000)
        under = clean_path(request.path_params.get("path", ""))

        def status() -> dict[str, Any]:
            adds = sorted(p for p in ws.staged.adds if _below(p, under))
            _, before = self.face.store.stat_many(ws.base.store, adds, at=ws.base.seq)
            hashes = self.repos.hashes([ws.staged.adds[p] for p in adds])
            commit = self.repos.commit(ws.base)
            added: list[dict[str, Any]] = []
            modified: list[dict[str, Any]] = []
            for path, old in zip(adds, before, strict=True):
                node = wire.Node(path, False, 0, hashes[ws.staged.adds[path]])
                (added if old is None else modified).append(wire.entry(node, commit))
            removed = [
                wire.entry(wire.Node(p, False, 0, ""), commit)
                for p in sorted(ws.staged.removes)
                if _below(p, under)
            ]
            dirs = {d for p in adds for d in ancestors_of(p)}
            return {
                "added_dirs": {
                    "num_files_staged": len(adds),
                    "total_files": len(adds),
                    "paths": {d: {"num_files_staged": 0} for d in sorted(dirs)},
                },
                "added_files": _paginated(added, page, size),
                "modified_files": _paginated(modified, page, size),
                "removed_files": _paginated(removed, page, size),
            }

        return wire.ok(staged=await self.face.run(status))

    # --- committing ---------------------------------------------------------------------

    @endpoint
    async def mergeable(self, request: Request) -> Response:
        ws = await self._find(request)
        if ws is None:
            return _missing(request.path_params["wid"])
        branch = request.path_params["branch"]

        def check() -> dict[str, Any]:
            head = self.repos.branch(ws.repo, branch)
            behind = changed_since(self.repos, ws.base, head, ws.staged.paths)
            return {"is_mergeable": not behind, "conflicts": behind, "commits": []}

        return wire.ok(mergeable=await self.face.run(check))

    @endpoint
    async def commit(self, request: Request) -> Response:
        ws = await self._find(request)
        if ws is None:
            return _missing(request.path_params["wid"])
        branch = request.path_params["branch"]
        body = await self.face.json(request)
        message = body.get("message")
        if not isinstance(message, str) or not message:
            raise bad_request("Invalid request body", "a commit needs a message")
        author, email = body.get("author") or "repomount", body.get("email") or ""
        async with self.face.lock(ws.repo):
            ref: Ref = await self.face.run(
                commit_staged,
                self.repos,
                ws.repo,
                branch,
                ws.staged,
                base=ws.base,
                message=message,
                name=str(author),
                email=str(email),
            )
        self.face.backend.hub.notify(ref.store)
        ws.staged, ws.base = Staged(), ref
        commit = await self.face.run(self.repos.commit, ref)
        return wire.ok("resource_created", commit=commit.json())


async def staged_file(face: Face, repo: str, resource: str) -> tuple[str, str, str] | None:
    """For a download whose revision is a workspace: (blob, path, revision id) of the
    file as the workspace has it (staged, else its commit's); None for other revisions."""
    spaces: Workspaces | None = getattr(face, "workspaces", None)
    wid, _, rest = resource.partition("/")
    ws = None if spaces is None else spaces.all.get(wid)
    if ws is None or ws.repo != repo:
        return None
    path = clean_path(rest)
    if path in ws.staged.adds:
        return ws.staged.adds[path], path, ws.id
    if path in ws.staged.removes:
        raise OxenError(404, "resource_not_found", "Path does not exist", path)
    entry = await face.run(face.repos.entry, ws.base, path)
    if entry is None or entry.type != "file" or entry.version is None:
        raise OxenError(404, "resource_not_found", "Path does not exist", path)
    return entry.version, path, ws.id


def _below(path: str, under: str) -> bool:
    return not under or path == under or path.startswith(under + "/")


def _paginated(entries: list[dict[str, Any]], page: int, size: int) -> dict[str, Any]:
    chosen, pages = wire.page_of(entries, page, size)
    return {"entries": chosen, "resource": None, "metadata": None, **pages}
