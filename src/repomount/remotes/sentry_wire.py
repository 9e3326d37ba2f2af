"""Sentry's release files on the wire (docs/remotes.md, "Sentry"): the file list parsed,
`Link` cursors followed, names turned into paths and back, upload bodies built. Pure
functions, no I/O; a malformed answer raises ProtocolError, a malformed entry of a
list is skipped (validate.py).

A file's name is a flat string (`~/static/app.js`, `https://cdn.example.com/app.js`):
the mount shows it as a path split on `/`, with the `//` after a URL's scheme as one
`/` (a directory `https:`). A name no path can show that way (an empty segment, `.`,
`..`, a leading `/`, or `x:/y`, which would read back as `x://y`) is skipped.
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from repomount.paths import ancestors_of
from repomount.remotes import validate
from repomount.remotes.answers import parses
from repomount.remotes.base import Entry
from repomount.remotes.filetree import FileTree
from repomount.remotes.validate import BadEntry
from repomount.sentrynames import name_of_path, path_of_name

log = logging.getLogger(__name__)

SERVICE = "Sentry"
SOURCE = "Sentry"  # how log lines name it

answer = parses(SERVICE)

_SHA1 = re.compile(r"[0-9a-f]{40}")
_LINK = re.compile(r"<[^>]*>((?:\s*;\s*[A-Za-z]+\s*=\s*\"[^\"]*\")*)")
_PARAM = re.compile(r"([A-Za-z]+)\s*=\s*\"([^\"]*)\"")
_TYPES = mimetypes.MimeTypes()  # Python's own table, not the machine's
# What release files mostly are, named as Sentry's docs name them (not left to Python's
# table, which changed .js between versions).
_WEB_TYPES = {
    ".js": "application/javascript",
    ".mjs": "application/javascript",
    ".cjs": "application/javascript",
    ".map": "application/json",  # a source map
    ".json": "application/json",
    ".css": "text/css",
    ".html": "text/html",
    ".txt": "text/plain",
}


# --------------------------------------------------------------------------- names


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Artifact:
    """One release file as the list answers it."""

    id: str
    path: str
    dist: str | None
    sha1: str  # the version token
    size: int
    headers: Mapping[str, str] = field(default_factory=dict)
    created: float | None = None

    @property
    def name(self) -> str:
        return name_of_path(self.path)

    def entry(self) -> Entry:
        return Entry(self.path, "file", size=self.size, version=self.sha1, mtime=self.created)


def _artifact(data: dict[str, Any]) -> Artifact:
    name = data["name"]
    if not isinstance(name, str):
        raise BadEntry("its name is not a string")
    path = path_of_name(name)
    if path is None:
        raise BadEntry(f"the name {name!r:.80} is no path (empty, '.' or '..' segments)")
    file_id, dist, sha1 = data["id"], data.get("dist"), data["sha1"]
    if not isinstance(file_id, str | int) or isinstance(file_id, bool) or not str(file_id):
        raise BadEntry(f"id {file_id!r:.40} is not a string")
    if dist is not None and not isinstance(dist, str):
        raise BadEntry(f"dist {dist!r:.40} is not a string")
    if not isinstance(sha1, str) or not _SHA1.fullmatch(sha1.lower()):
        raise BadEntry(f"sha1 {sha1!r:.60} is not 40 hex digits")
    headers = data.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise BadEntry("its headers are not strings")
    created = data.get("dateCreated")
    when = None if not isinstance(created, str) else validate.mtime(timestamp(created))
    return Artifact(
        id=str(file_id),
        path=path,
        dist=dist,
        sha1=sha1.lower(),
        size=validate.size(data["size"]),
        headers=headers,
        created=when,
    )


@answer
def artifacts(data: object) -> list[Artifact]:
    """The files of one page of the list (a bad one skipped, logged)."""
    return validate.each(data, lambda item: _checked(_artifact(item)), source=SOURCE)


@answer
def artifact(data: dict[str, Any]) -> Artifact:
    """The file an upload or a rename answers."""
    return _checked(_artifact(data))


def _checked(a: Artifact) -> Artifact:
    validate.checked(a.entry())
    return a


@answer
def release_version(data: dict[str, Any]) -> str:
    return str(data["version"])


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def next_cursor(link: str | None) -> str | None:
    """The cursor of the `rel="next"` link while it says `results="true"`, else None."""
    for match in _LINK.finditer(link or ""):
        params = dict(_PARAM.findall(match[1]))
        if params.get("rel") == "next":
            return params.get("cursor") if params.get("results") == "true" else None
    return None


# --------------------------------------------------------------------------- the tree


class ReleaseTree(FileTree):
    """The files of one dist of a release, and the directories their paths imply."""

    def __init__(self, files: Iterable[Artifact], taken: float = 0.0) -> None:
        self.files = {a.path: a for a in files}
        self.taken = taken  # trio clock
        # Names are flat: "a.js" and "a.js/x" may both exist. A path is one or the other:
        # the directory is shown (it holds files), the file left out.
        dirs = {p.rsplit("/", 1)[0] for p in self.files if "/" in p}
        dirs |= {a for d in dirs for a in ancestors_of(d)}
        for path in sorted(dirs & self.files.keys()):
            log.warning("%s: skipping %r: it is also a directory of other names", SOURCE, path)
            del self.files[path]
        super().__init__(self.files)

    def file_entry(self, path: str) -> Entry | None:
        artifact = self.files.get(path)
        return None if artifact is None else artifact.entry()

    def under(self, path: str) -> list[Artifact]:
        prefix = path + "/"
        return [a for p, a in sorted(self.files.items()) if p.startswith(prefix)]


# --------------------------------------------------------------------------- uploads


def content_type(path: str, headers: Mapping[str, str] | None = None) -> str:
    """The Content-Type an upload gives a file: the one it had, else guessed from the name."""
    for key, value in (headers or {}).items():
        if key.lower() == "content-type" and value:
            return value
    base = posixpath.basename(path)
    known = _WEB_TYPES.get(posixpath.splitext(base)[1].lower())
    if known is not None:
        return known
    guessed, _ = _TYPES.guess_type(base, strict=False)
    return guessed or "application/octet-stream"


@dataclass(frozen=True)
class Form:
    """A multipart upload: what goes before the file's bytes, and after them."""

    content_type: str
    head: bytes
    tail: bytes


def upload_form(
    name: str, dist: str | None, ctype: str, headers: Mapping[str, str] | None = None
) -> Form:
    """The parts of `POST .../files/`: `name`, `dist`, a `header` part per header kept
    (Content-Type travels as the file part's own), then `file`."""
    boundary = "repomount-" + secrets.token_hex(16)
    fields = [("name", name)]
    if dist is not None:
        fields.append(("dist", dist))
    for key, value in (headers or {}).items():
        if key.lower() != "content-type" and _one_line(key + value):
            fields.append(("header", f"{key}:{value}"))
    if not _one_line(ctype):
        ctype = "application/octet-stream"
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode()
        + v.encode("utf-8")
        + b"\r\n"
        for k, v in fields
    )
    filename = re.sub(r'["\\\r\n]', "_", posixpath.basename(name)) or "file"
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return Form(f"multipart/form-data; boundary={boundary}", head, tail)


def _one_line(text: str) -> bool:
    return not any(c in text for c in "\r\n\t\f\v\\")
