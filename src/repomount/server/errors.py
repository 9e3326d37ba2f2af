"""Errors the HTTP layer answers with, and the HTTP status of each store error code."""

from __future__ import annotations

from repomount.server.store import StoreError

# Status of every error code the native protocol uses (docs/native-api.md, Conventions).
STATUS_OF_CODE = {
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "repo_exists": 409,
    "idempotency_conflict": 409,
    "conflict": 409,
    "directory_not_empty": 409,
    "path_conflict": 409,
    "gone": 410,
    "precondition_failed": 412,
    "request_timeout": 408,
    "too_large": 413,
    "range_not_satisfiable": 416,
    "invalid_path": 422,
    "invalid_request": 422,
    "unknown_blob": 422,
    "precondition_required": 428,
    "bad_json": 400,
    "bad_tar": 400,
    "hash_mismatch": 400,
}


class ApiError(StoreError):
    """A refusal decided by the HTTP layer itself (bad header, body too large, …)."""

    def __init__(self, code: str, message: str, **details: object) -> None:
        super().__init__(message, **details)
        self.code = code


def status_of(error: StoreError) -> int:
    return STATUS_OF_CODE.get(error.code, 500)
