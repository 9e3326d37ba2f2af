"""Oxen's wire format (Oxen's API (docs/remotes.md, "Oxen")): answers
parsed into entries, heads and pages; request bodies built. Pure functions, no I/O; a
malformed answer raises ProtocolError.

A file's version is its `hash`: the xxh3-128 of its bytes as Oxen writes it (lowercase
hex, no zero padding). The tree's version is the commit id of the branch's head.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import xxhash

from repomount.paths import joined
from repomount.remotes import validate
from repomount.remotes.answers import parses
from repomount.remotes.base import Entry

SERVICE = "Oxen"

answer = parses(SERVICE)


# --------------------------------------------------------------------------- hashes


def xxh3_hex(data: bytes) -> str:
    return format(xxhash.xxh3_128_intdigest(data), "x")


class Xxh3:
    """An incremental xxh3-128, giving Oxen's form of the digest."""

    def __init__(self) -> None:
        self._h = xxhash.xxh3_128()

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return format(self._h.intdigest(), "x")


def norm(version: str) -> str:
    """Versions compare as numbers: zero padding and case do not matter."""
    stripped = version.strip().lower().lstrip("0")
    return stripped or "0"


# --------------------------------------------------------------------------- answers


@answer
def commit_of_branch(data: dict[str, Any]) -> str:
    return str(data["branch"]["commit_id"])


@answer
def is_empty(data: dict[str, Any]) -> bool:
    return bool(data["repository"].get("is_empty", False))


@answer
def workspace_commit(data: dict[str, Any]) -> str:
    return str(data["workspace"]["commit"]["id"])


@answer
def commit_id(data: dict[str, Any]) -> str:
    return str(data["commit"]["id"])


@dataclass(frozen=True)
class DirPage:
    entries: list[Entry]
    total_pages: int
    head: str | None  # the commit the listing was read at, when the answer says
    # Files and directories it holds that no mount can show (skipped above): a plan
    # must still not remove them with the directory they are in (oxen_plan.py).
    hidden: list[str] = field(default_factory=list)


@answer
def dir_page(data: dict[str, Any], path: str) -> DirPage:
    """One page of `GET /dir/{rev}/{path}`: its entries (with every child listed below
    them, for a listing with depth), flattened; one a filesystem cannot show (a name
    too long, ...) is skipped with a warning, as every adapter's listing does."""
    flat: list[Entry] = []
    for item in data["entries"]:
        _flatten(item, path, flat)
    entries = validate.each(flat, validate.checked, source=SERVICE)
    shown = {e.path for e in entries}
    hidden = [e.path for e in flat if e.path not in shown]
    head = None
    here = data.get("dir")
    if isinstance(here, dict) and isinstance(here.get("resource"), dict):
        commit = here["resource"].get("commit")
        if isinstance(commit, dict) and commit.get("id"):
            head = str(commit["id"])
    return DirPage(entries, int(data.get("total_pages") or 1), head, hidden)


def _flatten(item: dict[str, Any], parent: str, out: list[Entry]) -> None:
    entry = _entry(item, parent)
    out.append(entry)
    for child in item.get("children") or ():
        _flatten(child, entry.path, out)


def _entry(item: dict[str, Any], parent: str) -> Entry:
    name = str(item["filename"])
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad file name {name!r}")
    path = joined(parent, name)
    if item["is_dir"]:
        return Entry(path=path, kind="dir")
    return Entry(path=path, kind="file", size=int(item["size"]), version=norm(str(item["hash"])))


@answer
def meta_entry(data: dict[str, Any], path: str) -> Entry:
    """The entry of `GET /meta/{rev}/{path}` (named by `path`, not by its filename)."""
    item = data["entry"]
    if item["is_dir"]:
        return Entry(path=path, kind="dir")
    return Entry(path=path, kind="file", size=int(item["size"]), version=norm(str(item["hash"])))


# --------------------------------------------------------------------------- requests


def new_workspace_id() -> str:
    return f"workspace-{uuid.uuid4()}"


def workspace_body(workspace_id: str, branch: str) -> dict[str, Any]:
    """`PUT /workspaces`, as the official client sends it."""
    return {
        "workspace_id": workspace_id,
        "branch_name": branch,
        "resource_path": "/",
        "entity_type": "user",
        "name": None,
        "force": True,
    }


def url_path(path: str) -> str:
    """A repository path in a URL: every segment percent-encoded ('+' too, which Oxen
    would read as a space)."""
    return quote(path, safe="/")


@dataclass(frozen=True)
class Upload:
    path: str  # where the file goes in the repository
    data: bytes


def add_files_body(files: Sequence[Upload], boundary: str) -> bytes:
    """A multipart body of `file[]` parts, each gzipped as the official client sends
    them, named by its path (relative to the root)."""
    out = bytearray()
    for f in files:
        name = quote(f.path, safe="/")
        out += (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file[]"; filename="{name}"\r\n'
            "Content-Type: application/gzip\r\n\r\n"
        ).encode()
        out += gzip.compress(f.data, compresslevel=1, mtime=0)
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)
