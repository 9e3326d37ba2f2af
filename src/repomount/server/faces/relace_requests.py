"""Reading the Relace face's requests: JSON bodies and query parameters, validated with
the errors FastAPI (which the real service runs on) gives: 422 with
`{"detail": [{"type", "loc", "msg", "input"}]}`; a bad path or diff operation is a 400.
Bodies can be large (up to 100,000 files): callers run these in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from repomount.server.faces.relace_model import (
    DiffDelete,
    DiffOp,
    DiffRename,
    RelaceError,
    invalid,
    normalize_path,
)

# --- bodies -------------------------------------------------------------------------------

MAX_ITEMS = 100_000  # files or diff operations in one request, as native commits


@dataclass(frozen=True)
class TextWrite:
    """A diff write as sent: its content is not in the blob store yet."""

    path: str
    content: str


def source_kind(source: object, kinds: Sequence[str]) -> str:
    if not isinstance(source, dict):
        raise invalid(["body", "source"], "Input should be a valid dictionary", "model_type")
    kind = source.get("type")
    if kind not in kinds:
        expected = " or ".join(repr(k) for k in kinds)
        raise invalid(
            ["body", "source"],
            f"Input tag {kind!r} found using 'type' does not match any of the expected tags: "
            f"{expected}",
            "union_tag_invalid",
            source,
        )
    return str(kind)


def files(source: dict[str, Any]) -> dict[str, str]:
    raw = source.get("files")
    loc: list[str | int] = ["body", "source", "files"]
    if not isinstance(raw, list):
        raise invalid(loc, "Input should be a valid list", "list_type", raw)
    _check_count(raw, loc)
    files: dict[str, str] = {}
    for i, item in enumerate(raw):
        filename = str_field(item, "filename", [*loc, i])
        files[normalize_path(filename, write=True)] = str_field(item, "content", [*loc, i])
    return files


def diff_ops(source: dict[str, Any]) -> list[DiffOp | TextWrite]:
    raw = source.get("operations")
    loc: list[str | int] = ["body", "source", "operations"]
    if not isinstance(raw, list):
        raise invalid(loc, "Input should be a valid list", "list_type", raw)
    _check_count(raw, loc)
    ops: list[DiffOp | TextWrite] = []
    for i, op in enumerate(raw):
        kind = op.get("type") if isinstance(op, dict) else None
        if kind == "write":
            path = normalize_path(str_field(op, "filename", [*loc, i]), write=True)
            ops.append(TextWrite(path, str_field(op, "content", [*loc, i])))
        elif kind == "delete":
            ops.append(DiffDelete(normalize_path(str_field(op, "filename", [*loc, i]))))
        elif kind == "rename":
            old = normalize_path(str_field(op, "old_filename", [*loc, i]))
            new = normalize_path(str_field(op, "new_filename", [*loc, i]), write=True)
            ops.append(DiffRename(old, new))
        else:
            raise RelaceError(
                400, f"Invalid diff operation {i}: type must be write, delete or rename"
            )
    return ops


def _check_count(items: list[Any], loc: list[str | int]) -> None:
    if len(items) > MAX_ITEMS:
        raise invalid(
            loc, f"List should have at most {MAX_ITEMS} items, not {len(items)}", "too_long"
        )


def str_field(obj: object, name: str, loc: Sequence[str | int]) -> str:
    if not isinstance(obj, dict):
        raise invalid(loc, "Input should be a valid dictionary", "model_type", obj)
    value = obj.get(name)
    if value is None:
        raise invalid([*loc, name], "Field required", "missing", obj)
    if not isinstance(value, str):
        raise invalid([*loc, name], "Input should be a valid string", "string_type", value)
    return value


def metadata(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(
            ["body", "metadata"], "Input should be a valid dictionary", "dict_type", value
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise invalid(
                ["body", "metadata", key], "Input should be a valid string", "string_type", item
            )
    return dict(value)


# --- query parameters -----------------------------------------------------------------


def int_query(
    query: Mapping[str, str], name: str, default: int, low: int, high: int | None = None
) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(
            ["query", name], "Input should be a valid integer", "int_parsing", raw
        ) from None
    if value < low:
        raise invalid(
            ["query", name],
            f"Input should be greater than or equal to {low}",
            "greater_than_equal",
            raw,
        )
    if high is not None and value > high:
        raise invalid(
            ["query", name], f"Input should be less than or equal to {high}", "less_than_equal", raw
        )
    return value


def bool_query(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    value = raw.lower()
    if value in ("true", "1", "yes", "on", "t", "y"):
        return True
    if value in ("false", "0", "no", "off", "f", "n"):
        return False
    raise invalid(["query", name], "Input should be a valid boolean", "bool_parsing", raw)


def filter_query(raw: str | None) -> dict[str, str]:
    if raw is None:
        return {}
    try:
        wanted = json.loads(raw)
    except ValueError:
        wanted = None
    if not isinstance(wanted, dict):
        raise invalid(
            ["query", "filter_metadata"], "Input should be a JSON object", "json_invalid", raw
        )
    return {str(k): v for k, v in wanted.items()}


def time_query(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return time(raw)
    except ValueError:
        raise invalid(
            ["query", name], "Input should be a valid datetime", "datetime_from_date_parsing", raw
        ) from None


def time(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
