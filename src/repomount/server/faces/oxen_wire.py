"""The JSON the Oxen face answers: envelopes, errors, commits, entries, pages.

Shapes from Oxen's API (docs/remotes.md, "Oxen"). The official client
reads entries with `deny_unknown_fields`: an entry carries exactly the keys below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse

from repomount.server.faces.oxen_model import OXEN_VERSION, OxenError, dir_hash, file_type


def ok(kind: str = "resource_found", **payload: Any) -> JSONResponse:
    body = {"status": "success", "status_message": kind, "oxen_version": OXEN_VERSION}
    return JSONResponse({**body, **payload})


def error(err: OxenError) -> JSONResponse:
    body = {
        "error": {"type": err.kind, "title": err.title, "detail": err.detail},
        "status": "error",
        "status_message": err.kind,
        "oxen_version": OXEN_VERSION,
    }
    return JSONResponse(body, status_code=err.status)


def described_error(status: int, kind: str, description: str) -> JSONResponse:
    """The `StatusMessageDescription` form (repo and workspace not found)."""
    body = {
        "status": "error",
        "status_message": kind,
        "status_description": description,
        "oxen_version": OXEN_VERSION,
    }
    return JSONResponse(body, status_code=status)


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Commit:
    id: str
    parent_ids: list[str]
    message: str
    author: str
    email: str
    time: float

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent_ids": self.parent_ids,
            "message": self.message,
            "author": self.author,
            "email": self.email,
            "timestamp": timestamp(self.time),
        }


@dataclass(frozen=True)
class Node:
    """One file or directory as an entry shows it."""

    path: str
    is_dir: bool
    size: int
    hash: str | None  # a file's xxh3; directories get theirs from the commit
    children: list[Node] | None = None  # with depth


def resource(
    path: str, version: str, commit: Commit | None, branch: dict[str, str] | None
) -> dict[str, Any]:
    """A ParsedResourceView."""
    return {
        "workspace": None,
        "commit": None if commit is None else commit.json(),
        "branch": branch,
        "path": path,
        "version": version,
        "resource": f"{version}/{path}" if path else version,
    }


def entry(node: Node, commit: Commit, view: dict[str, Any] | None = None) -> dict[str, Any]:
    """A MetadataEntry (children only when listed with depth)."""
    name = node.path.rsplit("/", 1)[-1]
    if node.is_dir:
        kind, mime, ext = "dir", "inode/directory", ""
        digest = dir_hash(commit.id, node.path)
    else:
        kind, mime, ext = file_type(node.path)
        digest = node.hash or ""
    out: dict[str, Any] = {
        "filename": name,
        "hash": digest,
        "is_dir": node.is_dir,
        "latest_commit": None,
        "resource": view,
        "size": node.size,
        "data_type": kind,
        "mime_type": mime,
        "extension": ext,
        "metadata": None,
        "is_queryable": None,
    }
    if node.children is not None:
        out["children"] = [entry(child, commit) for child in node.children]
    return out


def page_of(items: list[Any], page: int, size: int) -> tuple[list[Any], dict[str, int]]:
    """One page (1-based) of `items` and the flattened Pagination."""
    total_pages = max(1, math.ceil(len(items) / size))
    chosen = items[(page - 1) * size : page * size]
    return chosen, {
        "page_size": size,
        "page_number": page,
        "total_pages": total_pages,
        "total_entries": len(items),
    }


def int_param(query: Any, name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise OxenError(400, "bad_request", f"Invalid {name}: {raw!r}") from None
    if not low <= value <= high:
        raise OxenError(400, "bad_request", f"{name} must be between {low} and {high}")
    return value


def bad_url(part: str, message: str) -> JSONResponse:
    """The 422 of a URL the server refuses to decode (server/urlguard.py)."""
    return described_error(422, "bad_request", f"invalid {part}: {message}")
