"""How the HTTP services say something went wrong, and what it means for us: error
bodies of every shape the services use, `Retry-After`, and the one mapping from a status
to the typed errors of `errors.py` (used by http.py's client)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from repomount.printable import printable
from repomount.remotes.errors import (
    Conflict,
    Gone,
    InvalidPath,
    NotFound,
    PreconditionRequired,
    ProtocolError,
    RemoteError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from repomount.remotes.limits import decode_json

TRANSIENT_STATUSES = frozenset({408, 423, 429})  # and every 5xx


# --------------------------------------------------------------------------- error bodies


@dataclass(frozen=True)
class ErrorBody:
    """What a service said about a failure, whatever shape its JSON had."""

    code: str | None = None
    message: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


ErrorParser = Callable[[httpx.Response], ErrorBody]


def parse_error_body(response: httpx.Response) -> ErrorBody:
    """Understand the error shapes of all five services: native and Oxen
    `{"error": {"code"|"type", "message"|"title"|"detail", ...}}`, Relace gateway
    `{"error": "msg"}`, FastAPI/Sentry `{"detail": "msg" | [...]}`, Terminal Use
    `{"code": N, "message": "msg"}`; anything else becomes a short text excerpt."""
    try:
        data = decode_json(response.content)
    except ValueError:
        text = response.content[:200].decode("utf-8", "replace")
        return ErrorBody(message=" ".join(text.split())[:200] or None)
    if not isinstance(data, dict):
        return ErrorBody(message=str(data)[:200])
    err = data.get("error")
    if isinstance(err, dict):
        code = err.get("code", err.get("type"))
        message = err.get("message", err.get("title", err.get("detail")))
        return ErrorBody(_str_or_none(code), _str_or_none(message), err)
    if isinstance(err, str):
        return ErrorBody(None, err, data)
    detail = data.get("detail")
    if isinstance(detail, list):  # FastAPI validation errors
        msgs = [str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail]
        return ErrorBody("validation_error", "; ".join(msgs)[:200], data)
    message = detail if detail is not None else data.get("message")
    return ErrorBody(_str_or_none(data.get("code")), _str_or_none(message), data)


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


MESSAGE_MAX = 500  # characters of a service's own words kept in an error's message


def _cut(text: str) -> str:
    """A service's message, bounded: it goes to every log line and status that names the
    error (a JSON body's message had no bound; a non-JSON body is cut at 200 bytes)."""
    return text if len(text) <= MESSAGE_MAX else text[:MESSAGE_MAX] + "…"


# --------------------------------------------------------------------------- mapping


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def map_error(
    status: int, body: ErrorBody, *, context: str, retry_after: float | None = None
) -> RemoteError:
    """The single place where an HTTP status (and the service's error body) becomes a
    typed error. `context` says what was attempted, e.g. "GET /v1/repos/x". The
    service's words are its own: their control characters are escaped here, once, as
    the message goes on to logs, `repomount status` and the systemd status line."""
    what = printable(_cut(body.message or body.code or "no details"))
    msg = f"{context}: {status} {what}"
    code = body.code
    if status in (401, 403):
        return Unauthorized(msg, status=status, code=code)
    if status == 404:
        return NotFound(msg, status=status, code=code)
    if status in (409, 412):
        current = body.details.get("current_version", body.details.get("current"))
        return Conflict(msg, current=_str_or_none(current), status=status, code=code)
    if status == 410:
        return Gone(msg, status=status, code=code)
    if status == 413:
        return TooLarge(msg, status=status, code=code)
    if status == 422:
        if code == "invalid_path":
            return InvalidPath(msg, status=status, code=code)
        return ProtocolError(msg, status=status, code=code)
    if status == 428:
        return PreconditionRequired(msg, status=status, code=code)
    if is_transient_status(status):
        return Unavailable(msg, status=status, retry_after=retry_after, code=code)
    return ProtocolError(msg, status=status, code=code)


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500
