"""Relace's wire format (docs/remotes.md, "Relace"): clone and update answers
parsed, update bodies built. Pure functions, no I/O; a malformed answer raises
ProtocolError. What a batch becomes (checks, phases, grouping) is relace_plan.py."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from repomount.remotes import validate
from repomount.remotes.answers import parses
from repomount.remotes.base import Entry
from repomount.remotes.relace_plan import RemoteFile, WireDelete, WireOp, WireWrite
from repomount.remotes.validate import BadEntry

SERVICE = "Relace"
SOURCE = "Relace"  # how log lines name it

answer = parses(SERVICE)


def repo_name(data: dict[str, Any], default: str) -> str:
    """The name in a repo's metadata, or `default` (the metadata is free-form)."""
    metadata = data.get("metadata") or {}
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return str(name or default)


@answer
def repo_head(data: dict[str, Any]) -> str:
    """The repo's head after an update, upload or delete."""
    return str(data["repo_head"])


@answer
def clone_files(data: dict[str, Any]) -> dict[str, RemoteFile]:
    """The files of a clone answer (size and version of each, from its text). An item
    no filesystem could hold (a bad path, no content) is skipped, logged."""
    return dict(validate.each(data["files"], _clone_item, source=SOURCE))


def _clone_item(item: dict[str, Any]) -> tuple[str, RemoteFile]:
    path, content = item["filename"], item["content"]
    if not isinstance(path, str) or not isinstance(content, str):
        raise BadEntry("its filename or content is not a string")
    validate.checked(Entry(path, "file"))  # the path's rules
    # JSON may carry lone surrogates: encode them rather than fail the clone.
    raw = content.encode("utf-8", "surrogatepass")
    return path, RemoteFile(len(raw), hashlib.sha256(raw).hexdigest())


def update_body(request: Sequence[WireOp], texts: Mapping[int, str]) -> dict[str, Any]:
    """A `POST /update` diff applying `request`; `texts` holds each write's content."""
    return {"source": {"type": "diff", "operations": [_operation(op, texts) for op in request]}}


def _operation(op: WireOp, texts: Mapping[int, str]) -> dict[str, str]:
    if isinstance(op, WireWrite):
        return {"type": "write", "filename": op.change.path, "content": texts[op.index]}
    if isinstance(op, WireDelete):
        return {"type": "delete", "filename": op.path}
    return {"type": "rename", "old_filename": op.src, "new_filename": op.dst}
