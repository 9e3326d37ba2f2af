"""Terminal Use's wire format (docs/remotes.md, "Terminal Use"): manifest
entries and upload answers parsed, upload queries built, listings assembled. Pure
functions, no I/O; a malformed answer raises ProtocolError."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from repomount.remotes import validate
from repomount.remotes.answers import parses
from repomount.remotes.base import Entry, Expect, ExpectT, Write
from repomount.remotes.validate import BadEntry

SERVICE = "Terminal Use"
SOURCE = "Terminal Use"  # how log lines name it

answer = parses(SERVICE)


# --------------------------------------------------------------------------- versions


def norm(token: str) -> str:
    """Versions compare without an optional `sha256:` prefix, case-insensitively."""
    return token.strip().lower().removeprefix("sha256:")


def expected(expect: ExpectT, current: str | None) -> bool:
    """Whether `current` (None: no file) is what `expect` asks for."""
    if expect is Expect.ANY:
        return True
    if expect is Expect.ABSENT:
        return current is None
    assert isinstance(expect, str)
    return current is not None and current == norm(expect)


@answer
def archive_version(data: dict[str, Any]) -> str:
    """A filesystem's archive version as the service wrote it ("" while it has none)."""
    checksum = data["archive_checksum"]
    return "" if checksum is None else str(checksum)


# --------------------------------------------------------------------------- listings


def below(path: str, directory: str) -> bool:
    return not directory or path == directory or path.startswith(directory + "/")


def _entry(data: dict[str, Any]) -> Entry:
    path = _path(data["path"])
    modified = data.get("modified_at")
    if modified is not None and not isinstance(modified, str):
        raise BadEntry(f"modified_at {modified!r:.60} is not a date")
    mtime = None if not modified else validate.mtime(timestamp(modified))
    if data.get("is_directory"):
        return Entry(path=path, kind="dir", mtime=mtime)
    checksum = data.get("checksum")
    if checksum is not None and not isinstance(checksum, str):
        raise BadEntry(f"checksum {checksum!r:.60} is not a string")
    return Entry(
        path=path,
        kind="file",
        size=validate.size(data.get("size_bytes") or 0),
        version=None if checksum is None else validate.version(norm(checksum)),
        mtime=mtime,
    )


def _path(value: object) -> str:
    if not isinstance(value, str):
        raise BadEntry("its path is not a string")
    return value.lstrip("/")


@answer
def file_entry(data: dict[str, Any]) -> Entry:
    """One manifest entry, as GET .../files/{path} answers it."""
    return validate.checked(_entry(data))


@answer
def page(data: dict[str, Any]) -> tuple[list[Entry], int, int]:
    """One page of `GET .../files`: its entries (one no filesystem could show is
    skipped, logged), how many it held (the next page's offset counts them all), and
    how many the listing has in all. The root's own entry ("/"), which `tree` would
    skip anyway, is left out quietly."""
    files = data["files"]
    if not isinstance(files, list):
        raise TypeError("files is not a list")
    listed = [f for f in files if not (isinstance(f, dict) and f.get("path") in ("", "/"))]
    total = validate.integer(data["total_count"], "total_count")
    return validate.entries(listed, _entry, source=SOURCE), len(files), total


@answer
def listed_paths(data: dict[str, Any]) -> list[str]:
    return validate.each(data["files"], lambda f: _path(f["path"]), source=SOURCE)


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def tree(path: str, listed: list[Entry], *, recursive: bool) -> list[Entry]:
    """The entries below `path` (all, or its children), with the directories that the
    files' paths imply, sorted by path."""
    found: dict[str, Entry] = {}
    depth = len(path.split("/")) if path else 0
    for entry in listed:
        if entry.path == path:
            continue
        parts = entry.path.split("/")
        for i in range(depth + 1, len(parts)):
            ancestor = "/".join(parts[:i])
            found.setdefault(ancestor, Entry(path=ancestor, kind="dir"))
        if entry.kind == "dir":
            found.setdefault(entry.path, entry)
        else:
            found[entry.path] = entry
    entries = sorted(found.values(), key=lambda e: e.path)
    if recursive:
        return entries
    prefix = f"{path}/" if path else ""
    return [e for e in entries if "/" not in e.path[len(prefix) :]]


# --------------------------------------------------------------------------- uploads


def upload_params(change: Write, base: str) -> dict[str, str | int]:
    """The query of a `file-upload`: conditional on `base` (the archive version) unless
    the change expects ANY, and always with the content's digest."""
    params: dict[str, str | int] = {"path": change.path}
    if change.expect is not Expect.ANY:
        params.update(writeMode="conditional", baseVersion=base)
        if change.expect is Expect.ABSENT:
            params["createOnly"] = "*"
        else:
            assert isinstance(change.expect, str)
            params["expectedVersion"] = change.expect
    params["digest"] = "sha-256=" + base64.b64encode(bytes.fromhex(change.sha256)).decode()
    return params


def upload_headers(change: Write, size: int) -> dict[str, str]:
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    if change.key:
        headers["Idempotency-Key"] = change.key
    return headers


@answer
def uploaded(data: dict[str, Any]) -> tuple[str, str]:
    """(the new archive version as sent, the file's new version) of an upload answer."""
    return str(data["archive_version"]), norm(str(data["file_version"]))
