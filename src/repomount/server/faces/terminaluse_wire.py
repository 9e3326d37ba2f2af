"""Terminal Use wire details shared by the face's handlers: error shapes, version
tokens, parameter parsing and the JSON models (field names as the SDK's pydantic types).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import mimetypes
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from repomount.paths import InvalidPathError, shown, validate_path
from repomount.server.backend import Backend
from repomount.server.body import REFUSAL_STATUS
from repomount.server.faces.terminaluse_archive import ArchiveFile
from repomount.server.jsonresponse import JSONResponse
from repomount.server.names import control_character_problem, is_unicode
from repomount.server.store import Entry, NotFound, RepoInfo, StoreError

NAMESPACE = "repomount"
ATTR_NAME, ATTR_PROJECT = "terminaluse.name", "terminaluse.project_id"

# Store error code -> status on this face (the SDK knows 400/404/409/412/422/428).
STATUS = {
    "not_found": 404,
    "idempotency_conflict": 409,
    "stale_base": 409,
    "conflict": 412,
    **REFUSAL_STATUS,  # (too_large 413, request_timeout 408)
    "invalid_path": 400,
    "invalid_request": 400,
    "path_conflict": 400,
    "directory_not_empty": 400,
    "bad_json": 400,
    "hash_mismatch": 400,
}


class FaceError(Exception):
    """An answer `{"code": N, "message": m, "detail": m}`: both documented shapes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ValidationError(Exception):
    """422 in FastAPI's shape, which the SDK parses as HTTPValidationError."""

    def __init__(self, where: str, name: str, message: str) -> None:
        super().__init__(message)
        self.body = {"detail": [{"loc": [where, name], "msg": message, "type": "value_error"}]}


# --- handlers ------------------------------------------------------------------------

Api = TypeVar("Api")
Handler = Callable[[Api, Request], Awaitable[Response]]


def endpoint(fn: Handler[Api]) -> Handler[Api]:
    """Every refusal in the face's error shapes."""

    @wraps(fn)
    async def handler(self: Api, request: Request) -> Response:
        try:
            return await fn(self, request)
        except ValidationError as error:
            return JSONResponse(error.body, status_code=422)
        except FaceError as error:
            return error_response(error.status, error.message)
        except StoreError as error:
            return error_response(STATUS.get(error.code, 500), error.message)

    return handler


async def filesystem_info(backend: Backend, fs_id: str) -> RepoInfo:
    try:
        return await backend.run(backend.store.repo_info, fs_id)
    except NotFound:
        raise FaceError(404, f"Filesystem not found: {fs_id}") from None


# --- archive versions ----------------------------------------------------------------


def archive_version(info: RepoInfo, head: int) -> str:
    """The token of `head` of this incarnation of the repository (bare lowercase hex)."""
    tie = hashlib.sha256(f"terminaluse\0{info.name}\0{info.created_at}\0{head}".encode())
    return f"{head:016x}{tie.hexdigest()[:48]}"


def base_head(token: str, info: RepoInfo) -> int:
    """The head a baseVersion names; -1 (never a head, so the store answers "stale",
    after looking for a replay) when it names none of this filesystem. An empty token is
    the empty filesystem's: the real service has no archive checksum before a write."""
    token = norm(token)
    if token == "":
        return 0
    try:
        head = int(token[:16], 16)
    except ValueError:
        return -1
    return head if archive_version(info, head) == token else -1


def norm(token: str) -> str:
    """Tokens compare without an optional `sha256:` prefix, case-insensitively."""
    token = token.strip().lower()
    return token.removeprefix("sha256:")


# --- JSON models, parameters ----------------------------------------------------------


def filesystem_json(info: RepoInfo, attrs: dict[str, str]) -> dict[str, Any]:
    return {
        "id": info.name,
        "namespace_id": NAMESPACE,
        "project_id": attrs.get(ATTR_PROJECT),
        "name": attrs.get(ATTR_NAME),
        "status": "READY",
        "archive_checksum": f"sha256:{archive_version(info, info.head)}",
        "archive_path": None,
        "archive_size_bytes": None,
        "created_at": info.created_at,
        "updated_at": info.updated_at or info.created_at,
        "last_synced_at": info.updated_at,
    }


def as_text(data: bytes, *, cut: bool) -> str | None:
    """UTF-8 text, or None: binary. When `data` was cut at the limit, a character split
    by the cut is dropped."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if cut and error.start >= len(data) - 3:
            return as_text(data[: error.start], cut=False)
        return None


def mime_of(entry: Entry) -> str | None:
    return mimetypes.guess_type(entry.path)[0]


def texty(mime: str) -> bool:
    return mime.startswith("text/") or mime in (
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-yaml",
        "application/toml",
    )


def request_path(raw: str, *, status: int, write: bool = False) -> str:
    """A request's file path: leading "/" and "./" are dropped; '..' and friends refused
    with `status`. One that is not valid Unicode, or one to `write` that holds a control
    character (server/names.py), fails validation: 422."""
    if not is_unicode(raw):
        raise ValidationError("query", "path", "the path is not valid Unicode")
    if write and (problem := control_character_problem(raw)):
        raise ValidationError("query", "path", f"invalid path {shown(raw)}: {problem}")
    path = raw
    while path.startswith(("/", "./")):
        path = path[1:] if path.startswith("/") else path[2:]
    try:
        return validate_path(path)
    except InvalidPathError as error:
        raise FaceError(status, f"Invalid path: {error}") from None


def parse_digest(value: str | None) -> str | None:
    """The hex SHA-256 a `sha-256=<base64>` digest names (400 when malformed)."""
    if value is None:
        return None
    algorithm, sep, encoded = value.partition("=")
    if not sep or algorithm.strip().lower() != "sha-256":
        raise FaceError(400, "digest must be sha-256=<base64 of the SHA-256 of the body>")
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise FaceError(400, "digest is not the base64 of a 32-byte SHA-256")
    return raw.hex()


def bool_param(value: str | None, name: str, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValidationError("query", name, "value could not be parsed to a boolean")


def int_param(value: str | None, name: str, default: int, low: int, high: int | None) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValidationError("query", name, "value is not a valid integer") from None
    if number < low or (high is not None and number > high):
        raise ValidationError("query", name, f"must be from {low} to {high or 'any'}")
    return number


def body_field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise ValidationError("body", name, f"a {kind.__name__} is required")
    if isinstance(value, str):
        unicode_field(value, name)
    return value


def unicode_field(value: str, name: str) -> str:
    """A string to store: 422 when it holds a lone surrogate (no UTF-8 form)."""
    if not is_unicode(value):
        raise ValidationError("body", name, "not valid Unicode (a lone surrogate)")
    return value


def check_manifest(files: list[dict[str, Any]], unpacked: list[ArchiveFile]) -> None:
    """The manifest must describe the archive: this face keeps no separate manifest,
    so one that disagrees could not be stored and is refused."""
    if not files:
        return
    archived = {f.path: f.sha256 for f in unpacked}
    listed: dict[str, str | None] = {}
    for item in files:
        raw = item.get("path")
        if not isinstance(raw, str):
            raise ValidationError("body", "files", "every file needs a string path")
        if item.get("is_directory"):
            continue
        checksum = item.get("checksum")
        listed[request_path(raw, status=400)] = (
            norm(checksum) if isinstance(checksum, str) else None
        )
    if listed.keys() != archived.keys():
        odd = sorted(listed.keys() ^ archived.keys())
        raise FaceError(400, f"files does not match the archive (first difference: {odd[0]!r})")
    for path, checksum in listed.items():
        if checksum is not None and checksum != archived[path]:
            raise FaceError(400, f"the checksum of {path!r} does not match the archive")


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def bad_url(part: str, message: str) -> JSONResponse:
    """The 422 of a URL the server refuses to decode (server/urlguard.py)."""
    return JSONResponse(ValidationError(part, "url", message).body, status_code=422)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message, "detail": message}, status)
