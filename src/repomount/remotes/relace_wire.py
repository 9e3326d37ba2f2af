"""Relace's wire format (docs/remotes.md, "Relace"): clone and update answers
parsed, update bodies built. Pure functions, no I/O; a malformed answer raises
ProtocolError. What a batch becomes (checks, phases, grouping) is relace_plan.py."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from repomount.paths import InvalidPathError, validate_path
from repomount.remotes.http import parses
from repomount.remotes.relace_plan import RemoteFile, WireDelete, WireOp, WireWrite

SERVICE = "Relace"

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
def clone_files(data: dict[str, Any]) -> tuple[dict[str, RemoteFile], list[str]]:
    """The files of a clone answer (size and version of each, from its text) and the
    paths left out because no filesystem could hold them."""
    files: dict[str, RemoteFile] = {}
    unusable: list[str] = []
    for item in data["files"]:
        path, content = str(item["filename"]), item["content"]
        try:
            validate_path(path)
        except InvalidPathError:
            unusable.append(path)
            continue
        # JSON may carry lone surrogates: encode them rather than fail the clone.
        raw = str(content).encode("utf-8", "surrogatepass")
        files[path] = RemoteFile(len(raw), hashlib.sha256(raw).hexdigest())
    return files, unusable


def update_body(request: Sequence[WireOp], texts: Mapping[int, str]) -> dict[str, Any]:
    """A `POST /update` diff applying `request`; `texts` holds each write's content."""
    return {"source": {"type": "diff", "operations": [_operation(op, texts) for op in request]}}


def _operation(op: WireOp, texts: Mapping[int, str]) -> dict[str, str]:
    if isinstance(op, WireWrite):
        return {"type": "write", "filename": op.change.path, "content": texts[op.index]}
    if isinstance(op, WireDelete):
        return {"type": "delete", "filename": op.path}
    return {"type": "rename", "old_filename": op.src, "new_filename": op.dst}
