"""The Oxen API (`/api/repos/...`, the paths the official client uses) over the store.

Faithful to Oxen's API (docs/remotes.md, "Oxen"), checked with the
official `oxenai` client: the envelope (`status`, `status_message`, `oxen_version`),
200 for every success (creates too), Oxen's 404/409/422 error shapes, entries the
client can read with `deny_unknown_fields`, and xxh3-128 content hashes.
oxen_model.py maps names, ids and branches onto store repositories, oxen_repos.py reads
and changes them, oxen_commit.py commits staged changes, oxen_workspace.py holds the
workspace routes; docs/remotes.md ("Oxen") lists what the face leaves out.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from repomount.server.backend import Backend
from repomount.server.faces import oxen_wire as wire
from repomount.server.faces.oxen_commit import Staged, commit_staged
from repomount.server.faces.oxen_face import (
    Face,
    clean_path,
    endpoint,
    join_path,
    text_of,
    written_path,
)
from repomount.server.faces.oxen_model import (
    OXEN_VERSION,
    bad_request,
    check_branch_name,
    check_name,
    not_found,
)
from repomount.server.faces.oxen_repos import Ref
from repomount.server.faces.oxen_workspace import Workspaces
from repomount.server.multipart import Part
from repomount.server.store import Rename as StoreRename

MAX_PAGE = 10_000


def oxen_routes(backend: Backend) -> list[BaseRoute]:
    """The routes of the face (mount them under "/api")."""
    face = Face(backend)
    api = OxenApi(face)
    ws = Workspaces(face)
    r = "/repos/{ns}/{repo}"
    res = "{resource:path}"
    return [
        Route("/version", api.version, methods=["GET"]),
        Route("/repos", api.create_repo, methods=["POST"]),
        Route("/repos/{ns}", api.list_repos, methods=["GET"]),
        Route(r, api.get_repo, methods=["GET"]),
        Route(r, api.delete_repo, methods=["DELETE"]),
        Route(f"{r}/branches", api.list_branches, methods=["GET"]),
        Route(f"{r}/branches", api.create_branch, methods=["POST"]),
        Route(f"{r}/branches/{{name:path}}", api.get_branch, methods=["GET"]),
        Route(f"{r}/branches/{{name:path}}", api.move_branch, methods=["PUT"]),
        Route(f"{r}/branches/{{name:path}}", api.delete_branch, methods=["DELETE"]),
        Route(f"{r}/dir/{res}", api.list_dir, methods=["GET"]),
        Route(f"{r}/meta/{res}", api.meta, methods=["GET"]),
        Route(f"{r}/file/{res}", api.download, methods=["GET", "HEAD"]),
        Route(f"{r}/file/{res}", api.put_file, methods=["PUT"]),
        Route(f"{r}/file/{res}", api.delete_file, methods=["DELETE"]),
        Route(f"{r}/file/{res}", api.move_file, methods=["PATCH"]),
        Route(f"{r}/revisions/{res}", api.revision, methods=["GET"]),
        Route(f"{r}/commits/history/{res}", api.history, methods=["GET"]),
        Route(f"{r}/commits/{{cid}}", api.get_commit, methods=["GET"]),
        Route(f"{r}/commits/{{cid}}/complete", api.get_commit, methods=["POST"]),
        Route(f"{r}/action/{{state}}/{{action}}", api.action, methods=["GET", "POST"]),
        *ws.routes(r),
    ]


class OxenApi:
    def __init__(self, face: Face) -> None:
        self.face = face
        self.repos = face.repos

    @endpoint
    async def version(self, request: Request) -> Response:
        return wire.ok(version=OXEN_VERSION)

    # --- repositories -------------------------------------------------------------------

    @endpoint
    async def create_repo(self, request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("multipart/"):
            raise bad_request("Creating a repository from files is not supported here")
        body = await self.face.json(request)
        ns, name = body.get("namespace"), body.get("name")
        if not isinstance(ns, str) or not isinstance(name, str):
            raise bad_request("Invalid request body", "namespace and name are required")
        check_name(ns, "namespace")
        check_name(name, "repository")
        if body.get("files"):
            raise bad_request("Creating a repository with files is not supported here")
        await self.face.run(self.repos.create, ns, name)
        return wire.ok(repository=_repo_json(ns, name, None))

    @endpoint
    async def list_repos(self, request: Request) -> Response:
        ns = request.path_params["ns"]
        names = await self.face.run(self.repos.names_in, ns)
        return wire.ok(repositories=[_repo_json(ns, n, None, brief=True) for n in names])

    @endpoint
    async def get_repo(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        ns, name = request.path_params["ns"], request.path_params["repo"]

        def describe() -> dict[str, Any]:
            info = self.repos.store.repo_info(repo)
            branches = self.repos.branches(repo)
            data = _repo_json(ns, name, None)
            data.pop("latest_commit")
            data.update(is_empty=not branches, size=info.bytes, data_types=[])
            data["branch_count"] = len(branches)
            return data

        return wire.ok(repository=await self.face.run(describe))

    @endpoint
    async def delete_repo(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        async with self.face.lock(repo):
            await self.face.run(self.repos.delete, repo)
        self.face.backend.hub.notify(repo)
        return wire.ok("resource_deleted")

    # --- branches -----------------------------------------------------------------------

    @endpoint
    async def list_branches(self, request: Request) -> Response:
        repo = await self.face.repo(request)

        def listed() -> list[dict[str, str]]:
            return [
                {"name": b, "commit_id": self.repos.commit_id(self.repos.branch(repo, b))}
                for b in self.repos.branches(repo)
            ]

        return wire.ok(branches=await self.face.run(listed))

    @endpoint
    async def get_branch(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        name = request.path_params["name"]
        ref = await self.face.run(self.repos.branch, repo, name)
        return wire.ok(branch=await self._branch_json(name, ref))

    @endpoint
    async def create_branch(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        body = await self.face.json(request)
        name = body.get("new_name")
        if not isinstance(name, str):
            raise bad_request("Invalid request body", "new_name is required")
        check_branch_name(name)
        async with self.face.lock(repo):
            branches = await self.face.run(self.repos.branches, repo)
            if name in branches:
                ref = await self.face.run(self.repos.branch, repo, name)
                return wire.ok(branch=await self._branch_json(name, ref))
            start = await self._start_of(repo, body)
            ref = await self.face.run(self.repos.create_branch, repo, name, start)
        return wire.ok("resource_created", branch=await self._branch_json(name, ref))

    async def _start_of(self, repo: str, body: dict[str, Any]) -> Ref:
        cid, source = body.get("commit_id"), body.get("from_name")
        if isinstance(cid, str):
            ref = await self.face.run(self.repos.find_commit, repo, cid)
            if ref is None:
                raise not_found(f"Commit not found: {cid}")
            return ref
        if isinstance(source, str):
            found: Ref = await self.face.run(self.repos.branch, repo, source)
            return found
        raise bad_request("Invalid request body", "from_name or commit_id is required")

    @endpoint
    async def move_branch(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        name = request.path_params["name"]
        body = await self.face.json(request)
        cid = body.get("commit_id")
        if not isinstance(cid, str):
            raise bad_request("Invalid request body", "commit_id is required")
        async with self.face.lock(repo):
            target = await self.face.run(self.repos.find_commit, repo, cid)
            if target is None:
                raise not_found(f"Commit not found: {cid}")
            ref = await self.face.run(self.repos.move_branch, repo, name, target)
        self.face.backend.hub.notify(ref.store)
        return wire.ok("resource_updated", branch=await self._branch_json(name, ref))

    @endpoint
    async def delete_branch(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        name = request.path_params["name"]
        async with self.face.lock(repo):
            ref = await self.face.run(self.repos.branch, repo, name)
            branch = await self._branch_json(name, ref)
            await self.face.run(self.repos.delete_branch, repo, name)
        return wire.ok("resource_deleted", branch=branch)

    async def _branch_json(self, name: str, ref: Ref) -> dict[str, str]:
        return {"name": name, "commit_id": await self.face.run(self.repos.commit_id, ref)}

    # --- reading ------------------------------------------------------------------------

    @endpoint
    async def list_dir(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        query = request.query_params
        page = wire.int_param(query, "page", 1, 1, 1 << 30)
        size = wire.int_param(query, "page_size", 100, 1, MAX_PAGE)
        depth = wire.int_param(query, "depth", 0, -1, 1 << 20)

        def listing() -> dict[str, Any]:
            ref, path, branch = self.face.resolve(repo, request.path_params["resource"])
            entry = self.repos.entry(ref, path)
            if entry is None or entry.type != "dir":
                raise not_found("Path does not exist", f"Could not find directory: {path}")
            commit, view = self.face.view(ref, path, branch)
            nodes = self.repos.nodes(ref, path, depth - 1 if depth > 0 else depth)
            if depth == 0:
                nodes = [wire.Node(n.path, n.is_dir, n.size, n.hash) for n in nodes]
            chosen, pages = wire.page_of(nodes, page, size)
            total = sum(n.size for n in nodes)
            here = wire.entry(wire.Node(path, True, total, None), commit, view)
            return {
                "dir": here,
                "entries": [wire.entry(n, commit) for n in chosen],
                "resource": {"path": path, "version": view["version"]},
                "metadata": None,
                **pages,
            }

        return wire.ok(**await self.face.run(listing))

    @endpoint
    async def meta(self, request: Request) -> Response:
        repo = await self.face.repo(request)

        def describe() -> dict[str, Any]:
            ref, path, branch = self.face.resolve(repo, request.path_params["resource"])
            entry = self.repos.entry(ref, path)
            if entry is None or entry.type == "symlink":
                raise not_found("Path does not exist", f"Could not find path: {path}")
            commit, view = self.face.view(ref, path, branch)
            if entry.type == "dir":
                node = wire.Node(path, True, self.repos.dir_size(ref, path), None)
            else:
                digest = self.repos.hashes([entry.version or ""])[entry.version or ""]
                node = wire.Node(path, False, entry.size, digest)
            return wire.entry(node, commit, view)

        return wire.ok(entry=await self.face.run(describe))

    @endpoint
    async def download(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        return await self.face.send_file(request, repo, request.path_params["resource"])

    @endpoint
    async def revision(self, request: Request) -> Response:
        repo = await self.face.repo(request)

        def resolved() -> dict[str, Any]:
            ref, path, branch = self.face.resolve(repo, request.path_params["resource"])
            return self.face.view(ref, path, branch)[1]

        return wire.ok(resource=await self.face.run(resolved))

    @endpoint
    async def history(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        query = request.query_params
        page = wire.int_param(query, "page", 1, 1, 1 << 30)
        size = wire.int_param(query, "page_size", 100, 1, MAX_PAGE)
        resource = request.path_params["resource"]
        if ".." in resource.split("/")[0]:
            raise bad_request("Commit ranges (base..head) are not supported here")

        def listed() -> dict[str, Any]:
            if self.repos.is_empty(repo):
                return {"commits": [], **wire.page_of([], 1, size)[1]}
            ref, path, _ = self.face.resolve(repo, resource)
            if path:
                raise bad_request("The history of one path is not supported here")
            commits, pages = wire.page_of(self.repos.history(ref), page, size)
            return {"commits": [c.json() for c in commits], **pages}

        return wire.ok(**await self.face.run(listed))

    @endpoint
    async def get_commit(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        cid = request.path_params["cid"]

        def found() -> dict[str, Any]:
            ref = self.repos.find_commit(repo, cid)
            if ref is None:
                raise not_found(f"Revision not found: {cid}")
            return self.repos.commit(ref).json()

        created = request.method == "POST"
        if created:
            await self.face.body(request)  # {"branch": ...}: nothing to do
        commit = await self.face.run(found)
        return wire.ok("resource_created" if created else "resource_found", commit=commit)

    @endpoint
    async def action(self, request: Request) -> Response:
        await self.face.repo(request)
        state, action = request.path_params["state"], request.path_params["action"]
        if state not in ("started", "completed"):
            raise not_found(f"Unknown action state {state!r}")
        await self.face.body(request)
        return JSONResponse({"action": action, "status": "success", "state": state})

    # --- one-call writes ----------------------------------------------------------------

    @endpoint
    async def put_file(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        branch, path = _branch_path(request.path_params["resource"])
        parts = await self.face.form(request)
        single = [p for p in parts if p.name == "file" and p.filename is not None]
        many = [p for p in parts if p.name in ("files[]", "files") and p.filename is not None]
        if bool(single) == bool(many) or len(single) > 1:
            raise bad_request("Send one `file` part or `files[]` parts, not both")
        async with self.face.lock(repo):

            def targets() -> list[str]:
                if single:
                    is_dir = False
                    if not self.repos.is_empty(repo) and path:
                        ref = self.repos.branch(repo, branch)
                        entry = self.repos.entry(ref, path)
                        is_dir = entry is not None and entry.type == "dir"
                    name = single[0].filename or ""
                    return [join_path(path, name) if is_dir or not path else path]
                return [join_path(path, p.filename or "") for p in many]

            paths = await self.face.run(targets)
            blobs = await self.face.add_blobs([p.data for p in single or many])
            staged = Staged(adds=dict(zip(paths, blobs, strict=True)))
            ref = await self._commit(repo, branch, staged, parts, f"Upload {len(paths)} file(s)")
        return wire.ok("resource_created", commit=await self._commit_json(ref))

    @endpoint
    async def delete_file(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        branch, path = _branch_path(request.path_params["resource"])
        if not path:
            raise bad_request("Cannot remove the root directory")
        parts = await self.face.form(request)
        async with self.face.lock(repo):
            ref = await self.face.run(self.repos.branch, repo, branch)
            if await self.face.run(self.repos.entry, ref, path) is None:
                raise not_found("Path does not exist", f"Could not find path: {path}")
            staged = Staged(removes={path})
            ref = await self._commit(repo, branch, staged, parts, f"Removed '{path}'")
        return wire.ok("resource_deleted", commit=await self._commit_json(ref))

    @endpoint
    async def move_file(self, request: Request) -> Response:
        repo = await self.face.repo(request)
        branch, path = _branch_path(request.path_params["resource"])
        body = await self.face.json(request)
        new_path = body.get("new_path")
        if not isinstance(new_path, str) or not path:
            raise bad_request("Invalid request body", "new_path is required")
        new_path = written_path(new_path)
        author = body.get("name") or "repomount"
        email = body.get("email") or ""
        message = body.get("message") or f"Moved '{path}' to '{new_path}'"
        async with self.face.lock(repo):

            def move() -> Ref:
                ref = self.repos.branch(repo, branch)
                if self.repos.entry(ref, path) is None:
                    raise not_found("Path does not exist", f"Could not find path: {path}")
                if self.repos.entry(ref, new_path) is not None:
                    raise bad_request("Destination already exists", new_path)
                result = self.face.store.commit(
                    ref.store,
                    [StoreRename(path, new_path)],
                    message=str(message),
                    author=f"{author} <{email}>" if email else str(author),
                    base=ref.seq,
                )
                return Ref(ref.store, result.head)

            ref = await self.face.run(move)
        self.face.backend.hub.notify(ref.store)
        return wire.ok("resource_updated", commit=await self._commit_json(ref))

    async def _commit(
        self, repo: str, branch: str, staged: Staged, parts: list[Part], default: str
    ) -> Ref:
        ref: Ref = await self.face.run(
            commit_staged,
            self.repos,
            repo,
            branch,
            staged,
            base=None,
            message=text_of(parts, "message", default),
            name=text_of(parts, "name", "repomount"),
            email=text_of(parts, "email", ""),
        )
        self.face.backend.hub.notify(ref.store)
        return ref

    async def _commit_json(self, ref: Ref) -> dict[str, Any]:
        commit: wire.Commit = await self.face.run(self.repos.commit, ref)
        return commit.json()


def _branch_path(resource: str) -> tuple[str, str]:
    """A write's `{branch}/{path}`: the first segment names the branch (as in an empty
    repository, where the branch is made by the write)."""
    branch, _, rest = resource.partition("/")
    if not branch:
        raise bad_request("No branch given")
    return branch, clean_path(rest)


def _repo_json(ns: str, name: str, latest: Any, *, brief: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"namespace": ns, "name": name, "min_version": "0.36.0"}
    if not brief:
        data.update(latest_commit=latest, storage_kind="local")
    return data
