"""Sentry's wire format on the server's side (docs/remotes.md, "Sentry"): the JSON of a
release and of a release file, errors, cursors and `Link` headers, and which release
versions, file names and headers are acceptable. Pure functions, no I/O.

How a file name (`~/static/app.js`, `https://cdn.example.com/app.js`) becomes a store
path is here too: split on `/`, with the `//` after a URL's scheme kept as one `/` (the
directory `https:`). A name that cannot be a path that way is refused (400).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from typing import Any

from starlette.responses import JSONResponse

from repomount.sentrynames import name_of_path
from repomount.sentrynames import path_of_name as shared_path_of_name
from repomount.server.names import control_character_problem

NOT_FOUND = "The requested resource does not exist"
EXISTS = "A file matching this name already exists for the given release"
MAX_PER_PAGE = 100
MAX_OFFSET = 20_000  # Sentry's MAX_RELEASE_FILES_OFFSET: no page starts beyond it
MAX_VERSION = 200
MAX_NAME = 200  # what a rename (PUT) accepts; Sentry checks no length on upload
MAX_DIST = 64

_SPECIAL = re.compile(r"[\n\t\r\f\v\\]")  # Sentry's _filename_re
_BAD_VERSION_CHARS = "\r\n\f\x0c\t/\\"  # Release.is_valid_version


class SentryError(Exception):
    """A refusal as Sentry words it: the status and the JSON body."""

    def __init__(self, status: int, body: str | Mapping[str, Any]) -> None:
        super().__init__(str(body))
        self.status = status
        self.body: Mapping[str, Any] = {"detail": body} if isinstance(body, str) else body

    def response(self) -> JSONResponse:
        return JSONResponse(dict(self.body), status_code=self.status)


def not_found() -> SentryError:
    return SentryError(404, NOT_FOUND)


def field_error(name: str, message: str) -> SentryError:
    """A serializer's refusal: `{"name": ["..."]}`, 400."""
    return SentryError(400, {name: [message]})


# --------------------------------------------------------------------------- names


def path_of_name(name: str) -> str | None:
    """The store path a file name is kept at, or None when it cannot be one."""
    if control_character_problem(name) is not None:
        return None  # never written, on any face (server/names.py)
    return shared_path_of_name(name)


def content_disposition(basename: str) -> str:
    """A download's `Content-Disposition`, as Sentry sends it. Django writes a header
    value latin-1 cannot hold MIME-encoded (RFC 2047), whole; so does this. Before, a
    name such as `€.js` or `中文.js` made every download of it a 500 (the mount: EIO)."""
    value = f'attachment; filename="{basename}"'
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        value = Header(value, "utf-8", maxlinelen=sys.maxsize).encode()
    return value


def check_upload_name(name: str) -> str:
    """The store path of an uploaded file's name, or Sentry's 400 (and ours)."""
    if not name or name == "file":
        raise SentryError(400, "File name must be specified")
    if _SPECIAL.search(name.rsplit("/", 1)[-1]):
        raise SentryError(400, "File name must not contain special whitespace characters")
    path = path_of_name(name)
    if path is None:
        raise unstorable(name)
    return path


def check_new_name(data: Mapping[str, Any]) -> tuple[str, str]:
    """(name, store path) of a rename's body, or the serializer's 400."""
    name = data.get("name")
    if name is None:
        raise field_error("name", "This field is required.")
    if isinstance(name, bool) or not isinstance(name, str | int | float):
        raise field_error("name", "Not a valid string.")
    name = str(name).strip()
    if not name:
        raise field_error("name", "This field may not be blank.")
    if len(name) > MAX_NAME:
        raise field_error("name", f"Ensure this field has no more than {MAX_NAME} characters.")
    path = path_of_name(name)
    if path is None:
        raise unstorable(name)
    return name, path


def unstorable(name: str) -> SentryError:
    return SentryError(
        400,
        f"File name {name[:200]!r} cannot be stored by this server: split on '/', it "
        "must give names that are not empty, '.' or '..' (see docs/remotes.md)",
    )


def parse_headers(content_type: str, raw: Iterable[str]) -> dict[str, str]:
    """A file's headers: the part's Content-Type first, then each `Key:Value` part."""
    headers = {"Content-Type": content_type}
    for header in raw:
        key, colon, value = header.partition(":")
        if not colon:
            raise SentryError(400, "header value was not formatted correctly")
        if _SPECIAL.search(value):
            raise SentryError(400, "header value must not contain special whitespace characters")
        headers[key] = value.strip()
    return headers


def check_dist(dist: str) -> str:
    if len(dist) > MAX_DIST or any(c < " " for c in dist):
        raise field_error("dist", f"a dist is at most {MAX_DIST} printable characters")
    return dist


# --------------------------------------------------------------------------- releases


def check_version(version: object) -> str:
    """A release version Sentry accepts, or the serializer's 400."""
    if not isinstance(version, str) or not version:
        raise field_error("version", "This field is required.")
    if len(version) > MAX_VERSION:
        raise field_error(
            "version", f"Ensure this field has no more than {MAX_VERSION} characters."
        )
    stripped = version.strip()
    if (
        any(c in version for c in _BAD_VERSION_CHARS)
        or not stripped
        or stripped in (".", "..")
        or stripped.lower() == "latest"
    ):
        raise field_error("version", f"Release with name {version} is not allowed")
    return version


def number(text: str) -> int:
    """A stable positive id for a name (of a release or a project)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) % 10**9 + 1


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def release_json(version: str, created: float, projects: Iterable[str]) -> dict[str, Any]:
    """A release as Sentry's ReleaseSerializer answers it (nothing is ever deployed
    or committed here, so those fields are empty)."""
    return {
        "id": number(version),
        "version": version,
        "shortVersion": version,
        "versionInfo": None,
        "status": "open",
        "ref": None,
        "url": None,
        "dateReleased": None,
        "dateCreated": iso(created),
        "data": {},
        "newGroups": 0,
        "owner": None,
        "commitCount": 0,
        "lastCommit": None,
        "deployCount": 0,
        "lastDeploy": None,
        "authors": [],
        "projects": [
            {
                "id": number(p),
                "slug": p,
                "name": p,
                "newGroups": 0,
                "platform": None,
                "platforms": [],
                "hasHealthData": False,
            }
            for p in projects
        ],
        "firstEvent": None,
        "lastEvent": None,
        "currentProjectMeta": {},
        "userAgent": None,
    }


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class ReleaseFile:
    """One file of a release: where the store keeps it and what Sentry says of it."""

    id: int
    path: str
    dist: str | None
    repo: str  # the store repository holding it (one per release and dist)
    sha256: str
    sha1: str
    size: int
    headers: Mapping[str, str]
    created: float

    @property
    def name(self) -> str:
        return name_of_path(self.path)

    @property
    def basename(self) -> str:
        return posixpath.basename(self.name)

    def json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "dist": self.dist,
            "headers": dict(self.headers),
            "size": self.size,
            "sha1": self.sha1,
            "dateCreated": iso(self.created),
        }


def matches(f: ReleaseFile, queries: list[str], checksums: list[str]) -> bool:
    """The list's filters: any `query` a substring of the name (case-insensitive), any
    `checksum` its SHA-1."""
    if queries and not any(q.lower() in f.name.lower() for q in queries):
        return False
    return not checksums or f.sha1 in checksums


# --------------------------------------------------------------------------- pages


def page_of(query: Mapping[str, str]) -> tuple[int, int, int]:
    """(first index, page number, page size) a list request asks for, as Sentry's
    ChainPaginator reads `cursor` ("value:offset:is_prev", value = page size, offset =
    page number) and `per_page`; Sentry's 400s otherwise."""
    raw_limit = query.get("per_page", str(MAX_PER_PAGE))
    try:
        limit = int(raw_limit)
    except ValueError:
        raise SentryError(400, "Invalid per_page parameter.") from None
    if limit > MAX_PER_PAGE:
        raise SentryError(400, f"Invalid per_page value. Cannot exceed {MAX_PER_PAGE}.")
    if limit <= 0:
        raise SentryError(400, "Limit must be positive")
    cursor = query.get("cursor") or "0:0:0"
    bits = cursor.split(":")
    try:
        if len(bits) != 3:
            raise ValueError(cursor)
        value, page = int(float(bits[0])), int(bits[1])
        int(bits[2])
    except (ValueError, OverflowError):  # (OverflowError: "1e999")
        raise SentryError(400, "Invalid cursor parameter.") from None
    start = page * value
    if start >= MAX_OFFSET:
        raise SentryError(400, "Pagination offset too large")
    if start < 0:
        raise SentryError(400, "Pagination offset cannot be negative")
    return start, page, limit


def link_header(url: str, query: str, page: int, limit: int, more: bool) -> str:
    """Sentry's `Link` for page number `page` of `limit` entries: both links are always
    there, `results` says whether following one gives anything. `query` is the
    request's query string without its cursor."""
    base = f"{url}?{query}"

    def link(name: str, cursor: str, results: bool) -> str:
        flag = "true" if results else "false"
        return f'<{base}&cursor={cursor}>; rel="{name}"; results="{flag}"; cursor="{cursor}"'

    return ", ".join(
        [
            link("previous", f"{limit}:{page - 1}:1", page > 0),
            link("next", f"{limit}:{page + 1}:0", more),
        ]
    )
