"""What the Oxen face's routes share: the store and the model over it, bodies (JSON,
multipart), revisions resolved, file downloads, and Oxen's error shape for every refusal.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from typing import Any, BinaryIO

import trio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from repomount.paths import InvalidPathError, validate_path
from repomount.server.backend import Backend
from repomount.server.body import (
    MAX_JSON_BODY,
    REFUSAL_STATUS,
    SMALL_JSON_BODY,
    check_parse_cost,
    parsing_turn,
    read_body,
)
from repomount.server.errors import ApiError
from repomount.server.faces import oxen_wire as wire
from repomount.server.faces.oxen_model import (
    OxenError,
    bad_request,
    file_type,
    not_found,
    xxh3_hex,
)
from repomount.server.faces.oxen_repos import Ref, Repos
from repomount.server.inline import store_contents
from repomount.server.multipart import Part, parse_multipart
from repomount.server.names import control_character_problem
from repomount.server.store import InvalidRequest, NotFound, PathConflict, StoreError

MAX_BODY = 256 << 20  # a multipart body is parsed in memory
CHUNK = 256 << 10
MAX_PAGE = 10_000

Handler = Callable[[Any, Request], Awaitable[Response]]


def endpoint(fn: Handler) -> Handler:
    """Every refusal in Oxen's error shape, never a 500 for bad input."""

    @wraps(fn)
    async def handler(self: Any, request: Request) -> Response:
        try:
            return await fn(self, request)
        except OxenError as e:
            return wire.error(e)
        except ApiError as e:  # body readers
            status = REFUSAL_STATUS.get(e.code, 400)
            return wire.error(OxenError(status, "bad_request", "Invalid request body", e.message))
        except InvalidPathError as e:
            return wire.error(bad_request("Invalid path", str(e)))
        except ValueError as e:  # multipart, JSON
            return wire.error(bad_request("Invalid request body", str(e)))
        except NotFound as e:  # a repository went away meanwhile
            return wire.error(not_found("Resource not found", e.message))
        except (InvalidRequest, PathConflict) as e:
            return wire.error(bad_request("Invalid request", e.message))
        except StoreError as e:
            return wire.error(OxenError(400, "bad_request", "Cannot do that", e.message))

    return handler


class Face:
    """What the Oxen routes share: the store, the model over it, write locks."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.store = backend.store
        self.repos = Repos(backend.store)
        self._locks: dict[str, trio.Lock] = {}

    def lock(self, repo: str) -> trio.Lock:
        """Writes to one repository (its branches too) go one at a time."""
        return self._locks.setdefault(repo, trio.Lock())

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self.backend.run(fn, *args, **kwargs)

    async def repo(self, request: Request) -> str:
        ns, name = request.path_params["ns"], request.path_params["repo"]
        found: str = await self.run(self.repos.find, ns, name)
        return found

    async def json(self, request: Request) -> dict[str, Any]:
        data = await self.json_value(request, b"{}")
        if not isinstance(data, dict):
            raise bad_request("Invalid request body", "expected a JSON object")
        return data

    async def json_value(self, request: Request, empty: bytes) -> Any:
        """The body parsed as JSON (`empty` when there is none): at most MAX_JSON_BODY;
        one that is not small is parsed in a worker thread, in its turn (parsing_turn)."""
        raw = await self.body(request, MAX_JSON_BODY)
        async with parsing_turn(self.backend, raw):
            try:
                if len(raw) <= SMALL_JSON_BODY:
                    return json.loads(raw or empty)
                return await self.run(_loads_within_cost, raw)
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                raise bad_request("Invalid JSON body", str(e)) from None

    async def body(self, request: Request, limit: int = MAX_BODY, *, copies: int = 0) -> bytes:
        """The whole body, at most `limit` (a 413 past it: `endpoint`)."""
        limit = min(limit, self.backend.options.max_file_size)
        return await read_body(request, limit, copies=copies)

    async def form(self, request: Request) -> list[Part]:
        content_type = request.headers.get("content-type", "")
        body = await self.body(request, copies=1)  # (the parts are copies of its bytes)
        if not body and not content_type.startswith("multipart/"):
            return []
        # In a worker thread: each part costs tens of microseconds (its headers are an
        # email Message), and a body of tiny parts held the event loop, so every other
        # request, for seconds (a minute and more at MAX_BODY).
        parts: list[Part] = await self.run(parse_multipart, body, content_type)
        return parts

    async def add_blobs(self, contents: list[bytes]) -> list[str]:
        """Store contents as blobs; their SHA-256 (their xxh3 is remembered)."""

        def add() -> list[str]:
            shas = store_contents(self.store, contents)  # (one descriptor at a time)
            for sha, data in zip(shas, contents, strict=True):
                self.repos.remember(sha, xxh3_hex(data))
            return shas

        added: list[str] = await self.run(add)
        return added

    def resolve(self, repo: str, resource: str) -> tuple[Ref, str, str | None]:
        """`{revision}/{path}` -> (commit, path, branch name if the revision is one).
        The revision is a commit id, else the longest branch name that is a prefix."""
        parts = resource.split("/")
        ref = self.repos.find_commit(repo, parts[0]) if parts[0] else None
        if ref is not None:
            return ref, clean_path("/".join(parts[1:])), None
        branches = self.repos.branches(repo)
        for i in range(len(parts), 0, -1):
            name = "/".join(parts[:i])
            if name in branches:
                return self.repos.branch(repo, name), clean_path("/".join(parts[i:])), name
        raise not_found(f"Revision not found: {parts[0]}", f"no commit or branch {resource!r}")

    async def send_file(self, request: Request, repo: str, resource: str) -> Response:
        """A file's bytes (GET) or headers (HEAD) at `{revision}/{path}`; a workspace id
        as the revision reads what the workspace has (staged first)."""
        from repomount.server.faces.oxen_workspace import staged_file

        found = await staged_file(self, repo, resource)
        if found is None:

            def find() -> tuple[str, str, str]:
                ref, path, _ = self.resolve(repo, resource)
                entry = self.repos.entry(ref, path)
                if entry is None or entry.type != "file" or entry.version is None:
                    raise not_found("Path does not exist", f"Could not find file: {path}")
                return entry.version, path, self.repos.commit_id(ref)

            found = await self.run(find)
        sha, path, revision = found
        blob = await self.run(self.store.open_blob, sha)
        size = await self.run(lambda: blob.seek(0, 2))
        blob.seek(0)
        headers = {"Content-Length": str(size), "oxen-revision-id": revision}
        media = file_type(path)[1]
        if request.method == "HEAD":
            blob.close()
            return Response(headers=headers, media_type=media)
        return StreamingResponse(stream(blob), media_type=media, headers=headers)

    def view(self, ref: Ref, path: str, branch: str | None) -> tuple[wire.Commit, dict[str, Any]]:
        commit = self.repos.commit(ref)
        named = None if branch is None else {"name": branch, "commit_id": commit.id}
        return commit, wire.resource(path, branch or commit.id, commit, named)


def clean_path(raw: str) -> str:
    path = raw.strip("/")
    return validate_path(path) if path else ""


def text_of(parts: list[Part], name: str, default: str) -> str:
    for part in parts:
        if part.name == name and part.filename is None:
            return part.text
    return default


def written_path(raw: str) -> str:
    """`clean_path` for a name being written: no control characters (server/names.py)."""
    path = clean_path(raw)
    problem = control_character_problem(path)
    if problem is not None:
        raise OxenError(422, "bad_request", "Invalid path", f"{path!r} {problem}")
    return path


def join_path(directory: str, name: str) -> str:
    return written_path(f"{directory}/{name}" if directory else name)


async def stream(blob: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await trio.to_thread.run_sync(blob.read, CHUNK):
            yield chunk
    finally:
        blob.close()


def _loads_within_cost(raw: bytes) -> Any:
    """A large body parsed (a worker thread): 413 first for one too costly to parse."""
    check_parse_cost(raw)
    return json.loads(raw)
