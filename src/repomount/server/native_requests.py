"""Reading native requests (docs/native-api.md): paths (those written may hold no
control character, server/names.py), query parameters, headers
(preconditions, ranges, modes), listing cursors and commit bodies, each checked and
refused with the native error it deserves (an ApiError). Pure functions: no store, no
I/O, so the handlers in native.py only say what they read and what they do with it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

from starlette.datastructures import Headers

from repomount.paths import InvalidPathError, validate_path
from repomount.server.blobs import SHA256_RE
from repomount.server.errors import ApiError
from repomount.server.names import control_character_problem, is_unicode
from repomount.server.store import (
    ABSENT,
    PRESENT,
    Delete,
    InvalidRequest,
    Mkdir,
    Operation,
    Rename,
    Symlink,
    Write,
    check_symlink_target,
    sha256_hex,
)

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_READ_PATHS = 10_000
MAX_OPERATIONS = 100_000


class Unsatisfiable(Exception):
    """A Range header that asks only for bytes beyond the content (416)."""


def fingerprint(value: Any) -> str:
    """What an idempotency key is bound to: the SHA-256 of `value` as canonical JSON."""
    return sha256_hex(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())


def valid_path(path: str) -> str:
    try:
        return validate_path(path)
    except InvalidPathError as error:
        raise ApiError("invalid_path", str(error), path=path) from None


def writable_path(path: str) -> str:
    """A valid path that may also be written: no control characters (server/names.py)."""
    path = valid_path(path)
    if problem := control_character_problem(path):
        raise ApiError("invalid_path", f"invalid path {path!r}: {problem}", path=path)
    return path


def unicode_field(value: str, name: str) -> str:
    """A stored string: 422 when it holds a lone surrogate (no UTF-8 form)."""
    if not is_unicode(value):
        raise ApiError("invalid_request", f"{name!r} is not valid Unicode (a lone surrogate)")
    return value


def etags(header: str) -> list[str]:
    """The versions in an If-Match / If-None-Match header ('*' kept as is)."""
    tags = []
    for raw in header.split(","):
        tag = raw.strip().removeprefix("W/").strip('"')
        if tag:
            tags.append(tag)
    return tags


def etag_matches(header: str, version: str) -> bool:
    tags = etags(header)
    return "*" in tags or version in tags


def write_expectation(
    headers: Headers, *, allow_create_only: bool, require_preconditions: bool
) -> str | None:
    """The `expect` of a PUT or DELETE from its If-Match / If-None-Match headers."""
    if_match = headers.get("if-match")
    if_none_match = headers.get("if-none-match")
    if if_match is not None and if_none_match is not None:
        raise ApiError("invalid_request", "send If-Match or If-None-Match, not both")
    if if_match is not None:
        tags = etags(if_match)
        if len(tags) != 1:
            raise ApiError("invalid_request", "If-Match must hold exactly one version")
        return PRESENT if tags[0] == "*" else tags[0]
    if if_none_match is not None:
        if not allow_create_only or if_none_match.strip() != "*":
            raise ApiError(
                "invalid_request", "only 'If-None-Match: *' (create only) is supported on PUT"
            )
        return ABSENT
    if require_preconditions:
        raise ApiError(
            "precondition_required",
            'this server requires If-Match: "<version>" or If-None-Match: * on writes',
        )
    return None


# At most 20 digits each (a larger offset is no range of any file; int() refuses past
# 4300 digits): longer is malformed, and so ignored.
_RANGE_RE = re.compile(r"\s*bytes\s*=\s*(\d{0,20})\s*-\s*(\d{0,20})\s*")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single-range `Range` header; None to send everything (no header,
    or one this server does not support, such as several ranges, which HTTP lets it ignore).
    """
    if header is None:
        return None
    m = _RANGE_RE.fullmatch(header)
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:  # the last n bytes
        n = int(m[2])
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size
    start = int(m[1])
    if m[2] and int(m[2]) < start:
        return None  # syntactically invalid: ignored, as HTTP says
    if start >= size:
        raise Unsatisfiable
    end = size if not m[2] else min(int(m[2]) + 1, size)
    return start, end


MAX_HEAD = (1 << 63) - 1  # heads are SQLite integers


def head_param(value: object, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_HEAD:
        return value
    if isinstance(value, str) and _decimal(value) is not None and int(value) <= MAX_HEAD:
        return int(value)
    shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "…"
    raise ApiError("invalid_request", f"{name!r} must be a head (a decimal number), not {shown!r}")


def int_param(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    number = _decimal(value)
    if number is None or not low <= number <= high:
        raise ApiError("invalid_request", f"{name!r} must be a number from {low} to {high}")
    return number


def _decimal(value: str) -> int | None:
    """ASCII digits as a number; None for anything else, or for more than 20 digits
    (which no parameter needs, and int() refuses past 4300)."""
    if not (value.isascii() and value.isdigit()) or len(value) > 20:
        return None
    return int(value)


def float_param(value: str | None, name: str) -> float:
    if value is None:
        return 0.0
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ApiError("invalid_request", f"{name!r} must be a number of seconds, not {value!r}")
    return number


def bool_param(value: str | None, name: str) -> bool:
    if value is None or value.lower() in ("", "0", "false", "no"):
        return False
    if value.lower() in ("1", "true", "yes"):
        return True
    raise ApiError("invalid_request", f"{name!r} must be 1 or 0, not {value!r}")


PERMISSION_BITS = 0o777  # what a stored mode keeps: no setuid, setgid or sticky bit


def mode_param(value: str | None) -> int | None:
    """The X-Repomount-Mode header: octal, at most 7777; stored as its permission bits."""
    if value is None:
        return None
    mode = -1
    if value.isascii() and value.isdigit():
        try:
            mode = int(value, 8)
        except ValueError:
            pass
    if not 0 <= mode <= 0o7777:
        raise ApiError(
            "invalid_request", f"X-Repomount-Mode must be octal permission bits, not {value!r}"
        )
    return mode & PERMISSION_BITS


# 2^33 seconds either side of the epoch (about 1698 to 2242): what a signed 64-bit count
# of nanoseconds holds with room to spare, and the range a client shows (a time outside
# would make the file one no listing can show).
MTIME_NS_MAX = (1 << 33) * 10**9


def mtime_ns_value(value: object, what: str) -> int:
    """A modification time in integer nanoseconds since the epoch (before 1970: negative)."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not -MTIME_NS_MAX <= value <= MTIME_NS_MAX
    ):
        raise ApiError(
            "invalid_request",
            f"{what} must be an integer of nanoseconds since the epoch,"
            " between the years 1698 and 2242",
        )
    return value


def mtime_ns_param(value: str | None) -> int | None:
    """The X-Repomount-Mtime-Ns header of a PUT."""
    if value is None:
        return None
    text = value.strip()
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise ApiError("invalid_request", f"X-Repomount-Mtime-Ns must be an integer, not {value!r}")
    return mtime_ns_value(int(text), "X-Repomount-Mtime-Ns")


def encode_cursor(head: int, last_path: str) -> str:
    return base64.urlsafe_b64encode(f"{head}:{last_path}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        head, last_path = text.split(":", 1)
        at = head_param(head, "cursor")
        if at is None:
            raise ValueError("no head")
        return at, valid_path(last_path)
    except (ValueError, binascii.Error, ApiError):
        raise ApiError("invalid_request", f"{cursor!r} is not a cursor from this server") from None


def str_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise ApiError("invalid_request", f"{name!r} must be a string")
    return unicode_field(value, name)


def read_paths(body: dict[str, Any]) -> list[str]:
    """The 'paths' of a POST /read body, each a valid path."""
    paths = body.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ApiError("invalid_request", "'paths' must be a list of strings")
    if len(paths) > MAX_READ_PATHS:
        raise ApiError("invalid_request", f"at most {MAX_READ_PATHS} paths per request")
    for path in paths:
        valid_path(path)
    return paths


def idempotency_key(body: dict[str, Any]) -> str | None:
    """The 'idempotency_key' of a commit body, if it has one."""
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key):
        raise ApiError("invalid_request", "'idempotency_key' must be a non-empty string")
    return None if key is None else unicode_field(key, "idempotency_key")


def parse_operations(raw: object) -> tuple[list[Operation], dict[str, bytes]]:
    """Operations of a commit body, and the inline contents to store as blobs first (by
    their SHA-256, which the operations name)."""
    if not isinstance(raw, list) or not raw:
        raise ApiError("invalid_request", "'operations' must be a non-empty list")
    if len(raw) > MAX_OPERATIONS:
        raise ApiError("invalid_request", f"at most {MAX_OPERATIONS} operations per commit")
    operations: list[Operation] = []
    inline: dict[str, bytes] = {}
    for index, op in enumerate(raw):
        try:
            operations.append(_parse_operation(op, inline))
        except ApiError as error:
            error.details.setdefault("index", index)
            error.message = f"operation {index}: {error.message}"
            raise
    return operations, inline


def _parse_operation(op: object, inline: dict[str, bytes]) -> Operation:
    if not isinstance(op, dict):
        raise ApiError("invalid_request", "an operation must be a JSON object")
    kind = op.get("op")
    if kind == "write":
        path = _op_path(op, "path", write=True)
        blob, content = op.get("blob"), op.get("content_b64")
        if (blob is None) == (content is None):
            raise ApiError("invalid_request", "a write needs exactly one of 'blob', 'content_b64'")
        if content is not None:
            if not isinstance(content, str):
                raise ApiError("invalid_request", "'content_b64' must be a string")
            try:
                data = base64.b64decode(content, validate=True)
            except binascii.Error:
                raise ApiError("invalid_request", "'content_b64' is not valid base64") from None
            blob = sha256_hex(data)
            inline[blob] = data
        elif not isinstance(blob, str) or not SHA256_RE.fullmatch(blob):
            raise ApiError("invalid_request", "'blob' must be a lowercase hex SHA-256")
        mode = op.get("mode")
        if mode is not None and (
            not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777
        ):
            raise ApiError("invalid_request", "'mode' must be permission bits (0 to 4095)")
        if mode is not None:
            mode &= PERMISSION_BITS
        mtime_ns = op.get("mtime_ns")
        if mtime_ns is not None:
            mtime_ns = mtime_ns_value(mtime_ns, "'mtime_ns'")
        return Write(path, blob, expect=_op_expect(op, "expect"), mode=mode, mtime_ns=mtime_ns)
    if kind == "delete":
        return Delete(_op_path(op, "path"), expect=_op_expect(op, "expect"))
    if kind == "rename":
        return Rename(
            _op_path(op, "from"),
            _op_path(op, "to", write=True),
            expect=_op_expect(op, "expect"),
            expect_to=_op_expect(op, "expect_to"),
        )
    if kind == "mkdir":
        return Mkdir(_op_path(op, "path", write=True))
    if kind == "symlink":
        path, target = _op_path(op, "path", write=True), op.get("target")
        try:
            check_symlink_target(target)
        except InvalidRequest as error:
            raise ApiError("invalid_request", error.message, path=path) from None
        assert isinstance(target, str)
        return Symlink(path, target, expect=_op_expect(op, "expect"))
    raise ApiError(
        "invalid_request", f"unknown op {kind!r} (write, delete, rename, mkdir or symlink)"
    )


def _op_path(op: dict[str, Any], field: str, *, write: bool = False) -> str:
    value = op.get(field)
    if not isinstance(value, str):
        raise ApiError("invalid_request", f"{field!r} must be a path string")
    return writable_path(value) if write else valid_path(value)


def _op_expect(op: dict[str, Any], field: str) -> str | None:
    value = op.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError("invalid_request", f'{field!r} must be a version, "absent" or "*"')
    return value
