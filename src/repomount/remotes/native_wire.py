"""The native API's wire format (docs/native-api.md): request bodies and headers built,
answers parsed. Pure functions, no I/O; a malformed answer raises ProtocolError."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from repomount.remotes import validate
from repomount.remotes.answers import parses
from repomount.remotes.base import (
    Aborted,
    Applied,
    ApplyResult,
    Change,
    ChangeBatch,
    Conflicted,
    Delete,
    Entry,
    EntryKind,
    Expect,
    ExpectT,
    Failed,
    Listing,
    Mkdir,
    Outcome,
    ProtocolError,
    RemoteChange,
    RemoteError,
    Rename,
    RepoInfo,
    Symlink,
    Unavailable,
    Write,
)
from repomount.remotes.validate import BadEntry, checked

SERVICE = "the server"
SOURCE = "native server"  # how log lines name it
MAX_WAIT = 60.0  # the server holds a change-feed request at most this long
# Statuses with which a commit may blame single operations (see `refused`).
PER_OP_STATUSES = (404, 409, 422)

_KINDS: dict[str, EntryKind] = {"file": "file", "dir": "dir", "symlink": "symlink"}
_OPS = ("write", "delete", "mkdir")
_SHA256 = re.compile(r"[0-9a-f]{64}")

answer = parses(SERVICE)


# --------------------------------------------------------------------------- reading


def head_of(value: object) -> str | None:
    """A repo head as the server sent it (a decimal number, as a string or not)."""
    return None if value is None else validate.version(value)


@answer
def repo_info(data: dict[str, Any]) -> RepoInfo:
    limit = data.get("max_file_size")  # (an older server says none)
    if limit is not None and (type(limit) is not int or limit < 0):
        raise ValueError(f"max_file_size is not a size: {limit!r}")
    return RepoInfo(name=str(data["name"]), head=head_of(data["head"]), max_file_size=limit)


@dataclass(frozen=True)
class TreePage:
    head: str | None
    entries: list[Entry]
    cursor: str | None  # None on the last page


@answer
def tree_page(data: dict[str, Any]) -> TreePage:
    """One page of a listing; an entry no filesystem could show is skipped (logged)."""
    cursor = data.get("next_cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise ValueError(f"next_cursor {cursor!r:.60} is not a string")
    entries = validate.entries(data["entries"], _entry, source=SOURCE)
    return TreePage(head_of(data["head"]), entries, cursor)


def join_pages(path: str, pages: Sequence[TreePage], *, recursive: bool) -> Listing:
    """One listing of the pages of `path`. The cursor pins the first page's head, so
    every page must report that one."""
    heads = {page.head for page in pages}
    if len(heads) > 1:
        raise ProtocolError(f"listing of {path!r} spans heads {sorted(map(str, heads))}")
    entries = [entry for page in pages for entry in page.entries]
    return Listing(path=path, head=pages[0].head, entries=entries, recursive=recursive)


def _entry(data: dict[str, Any]) -> Entry:
    """One raw entry of a tree page (checked by `validate.entries`)."""
    kind = _KINDS.get(data["type"]) if isinstance(data["type"], str) else None
    if kind is None:
        raise BadEntry(f"unknown type {data['type']!r:.60}")
    path, mtime, mode = data["path"], data.get("mtime"), data.get("mode")
    version, mtime_ns = data.get("version"), data.get("mtime_ns")
    if not isinstance(path, str):
        raise BadEntry("its path is not a string")
    # Size, mode and a version string are checked by validate.checked, which every
    # entry goes through next (a listing of 10,000 checked them twice).
    if version is not None and not isinstance(version, str):
        version = validate.version(version)  # (a whole number, taken as a token)
    return Entry(
        path=path,
        kind=kind,
        size=data.get("size") or 0,
        version=version,
        # (the float only where the exact time is missing: a listing of 100,000 holds
        # 100,000 of them while it is merged)
        mtime=None if mtime is None or mtime_ns is not None else validate.mtime(mtime),
        mode=mode,
        target=data.get("target") if kind == "symlink" else None,
        mtime_ns=None if mtime_ns is None else validate.mtime_ns(mtime_ns),
    )


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer")
    return value


@answer
def file_entry(path: str, response: httpx.Response) -> Entry:
    """The entry a HEAD or GET answer describes (a symlink's still without its target)."""
    modified = response.headers.get("Last-Modified")
    mode = response.headers.get("X-Repomount-Mode")
    mtime_ns = response.headers.get("X-Repomount-Mtime-Ns")
    kind = response.headers.get("X-Repomount-Type", "file")
    if kind not in ("file", "symlink"):
        raise ValueError(f"X-Repomount-Type {kind!r}")
    return checked(
        target_known=False,
        entry=Entry(
            path=path,
            kind="symlink" if kind == "symlink" else "file",
            size=content_length(response),
            version=etag(response),
            mtime=email.utils.parsedate_to_datetime(modified).timestamp() if modified else None,
            mode=int(mode, 8) if mode else None,
            mtime_ns=int(mtime_ns) if mtime_ns else None,
        ),
    )


def with_target(entry: Entry, content: bytes) -> Entry:
    """A symlink's entry completed with its target, the content a GET gave."""
    if hashlib.sha256(content).hexdigest() != entry.version:
        raise ProtocolError(f"target of symlink {entry.path!r} does not match its version")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"target of symlink {entry.path!r} is not UTF-8") from exc
    try:
        target = validate.target(text)
    except BadEntry as exc:
        raise ProtocolError(f"symlink {entry.path!r}: {exc}") from exc
    return replace(entry, target=target)


def range_header(start: int, end: int | None) -> str:
    """The Range of bytes [start, end) (to the file's end when `end` is None)."""
    return f"bytes={start}-{'' if end is None else end - 1}"


def etag(response: httpx.Response) -> str | None:
    value = response.headers.get("ETag")
    if not value:
        return None
    value = value.strip().removeprefix("W/")
    return value.strip('"')


def content_length(response: httpx.Response) -> int:
    value = response.headers.get("Content-Length")
    if value is None:
        raise ProtocolError(f"{response.request.url.path}: no Content-Length")
    return int(value)


def content_range(response: httpx.Response) -> tuple[int, int]:
    """(first byte, total size) from `Content-Range: bytes a-b/total`."""
    value = response.headers.get("Content-Range", "")
    try:
        unit, _, rest = value.partition(" ")
        span, _, total = rest.partition("/")
        start = span.split("-", 1)[0]
        if unit != "bytes":
            raise ValueError(unit)
        return int(start), int(total)
    except ValueError as exc:
        raise ProtocolError(f"bad Content-Range {value!r}") from exc


def range_total(response: httpx.Response) -> int:
    """The size from a 416's `Content-Range: bytes */total`."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.rsplit("/", 1)[1])
    except (IndexError, ValueError) as exc:
        raise ProtocolError(f"bad Content-Range {value!r} on 416") from exc


# --------------------------------------------------------------------------- writing


def keeps_content(change: Change) -> bool:
    """Whether `change` writes a content the server has already: the very content of
    the version it expects (a new mode or mtime), or one staged (uploaded while it was
    written): the write names its blob and sends nothing."""
    return isinstance(change, Write) and (change.staged or change.expect == change.sha256)


@answer
def staged_blob(data: dict[str, Any]) -> str:
    """The SHA-256 the server named an uploaded blob by (POST /blobs, octet-stream)."""
    sha = data["sha256"]
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise ValueError(f"not a SHA-256: {sha!r}")
    return sha


def inline_writes(changes: Sequence[Change], inline_max: int, budget: int) -> dict[int, Path]:
    """The writes (by index) small enough to travel inside the commit as base64, within
    `budget` bytes in all: the commit's JSON sits in memory."""
    inline: dict[int, Path] = {}
    for i, change in enumerate(changes):
        if keeps_content(change):
            continue
        if isinstance(change, Write) and change.size <= min(inline_max, budget):
            inline[i] = change.source
            budget -= change.size
    return inline


def operation(change: Change, *, inline: bytes | None) -> dict[str, Any]:
    """One entry of a commit's `operations`. A write not `inline` names its blob, which
    must be uploaded before the commit is sent."""
    op: dict[str, Any]
    if isinstance(change, Write):
        op = {"op": "write", "path": change.path}
        if inline is not None:
            op["content_b64"] = base64.b64encode(inline).decode("ascii")
        else:
            op["blob"] = change.sha256
        if change.mode is not None:
            op["mode"] = change.mode & 0o7777
        if change.mtime_ns is not None:
            op["mtime_ns"] = change.mtime_ns
    elif isinstance(change, Delete):
        op = {"op": "delete", "path": change.path}
    elif isinstance(change, Rename):
        op = {"op": "rename", "from": change.src, "to": change.dst}
        expect_to = expect_value(change.expect_to)
        if expect_to is not None:
            op["expect_to"] = expect_to
    elif isinstance(change, Symlink):
        op = {"op": "symlink", "path": change.path, "target": change.target}
    elif isinstance(change, Mkdir):
        return {"op": "mkdir", "path": change.path}
    else:  # pragma: no cover - the Change union is closed
        raise TypeError(f"not a change: {change!r}")
    expect = expect_value(change.expect)
    if expect is not None:
        op["expect"] = expect
    return op


def expect_value(expect: ExpectT) -> str | None:
    if expect is Expect.ANY:
        return None
    if expect is Expect.ABSENT:
        return "absent"
    assert isinstance(expect, str)
    return expect


def commit_body(
    ops: list[dict[str, Any]], *, author: str, base: str | None, key: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": f"repomount: {len(ops)} change{'s' if len(ops) > 1 else ''}",
        "author": author,
        "operations": ops,
    }
    if base is not None:
        body["base"] = base
    if key is not None:
        body["idempotency_key"] = key
    return body


def batch_key(repo: str, changes: Sequence[Change]) -> str | None:
    """One idempotency key for the batch, from the changes' own stable keys, so that a
    retry of the same batch (even after a crash) replays instead of committing twice.
    Without a key on every change there is no safe key: two equal batches may be meant."""
    keys = [change.key for change in changes]
    if not all(keys):
        return None
    digest = hashlib.sha256(b"repomount-batch\0")
    for part in (repo, *keys):
        encoded = part.encode()
        digest.update(len(encoded).to_bytes(4, "big") + encoded)
    return digest.hexdigest()


@answer
def applied(data: dict[str, Any], count: int, *, replayed: bool = False) -> ApplyResult:
    """The result of a commit that went through: one version per operation.
    `replayed`: answered from the server's idempotency record (Idempotent-Replayed)."""
    head = head_of(data["head"])
    results = data["results"]
    if len(results) != count:
        raise ValueError(f"{len(results)} results for {count} operations")
    outcomes: list[Outcome] = [Applied(version=r.get("version")) for r in results]
    return ApplyResult(head=head, outcomes=outcomes, replayed=replayed)


def refused(error: RemoteError, details: Mapping[str, Any], count: int) -> list[Outcome]:
    """The outcomes of a commit refused as a whole (nothing was applied), when the server
    names the operations at fault: failed preconditions, or an `index` in the error.
    Otherwise (unknown repo, reused key) `error` concerns the request and is raised."""
    result = _aborted(error, count)
    if error.code == "conflict":
        _blame_conflicts(details, result)
        return result
    index = details.get("index")
    if not isinstance(index, int) or not 0 <= index < count:
        raise error
    if error.code == "unknown_blob":  # collected since we uploaded it: upload again
        error = Unavailable(error.message, status=error.status, code=error.code)
    result[index] = Failed(error)
    return result


class BlobRefused(RemoteError):
    """A content the server will never take (413: larger than it accepts), naming it:
    only the writes of that content fail, not every change of their batch."""

    def __init__(self, sha256: str, error: RemoteError) -> None:
        super().__init__(error.message, status=error.status, code=error.code)
        self.sha256, self.error = sha256, error


def blob_refused(changes: Sequence[Change], refusal: BlobRefused) -> list[Outcome]:
    """The outcomes of a batch one of whose contents was refused before its commit:
    the writes of it fail with the server's error; the others were not applied, and go
    again in the next round."""
    result = _aborted(refusal.error, len(changes))
    for i, c in enumerate(changes):
        if isinstance(c, Write) and c.sha256 == refusal.sha256:
            result[i] = Failed(refusal.error)
    return result


def _aborted(error: RemoteError, count: int) -> list[Outcome]:
    """A batch none of whose changes was applied because of `error` (the caller puts
    the failed ones in their places)."""
    aborted = Failed(Aborted(f"not applied: another change of the batch failed ({error})"))
    return [aborted] * count


@answer
def _blame_conflicts(details: Mapping[str, Any], result: list[Outcome]) -> None:
    found = details["conflicts"]
    if not found:
        raise ValueError("a conflict without conflicts")
    for conflict in found:
        current = conflict.get("current")
        result[int(conflict["index"])] = Conflicted(
            current=None if current is None else str(current)
        )


# --------------------------------------------------------------------------- change feed


def feed_request(since: str | None, wait: float) -> tuple[dict[str, str | int], float]:
    """The query of a change-feed request and how long the server may hold it (the
    request's answer timeout is longer by that much)."""
    params: dict[str, str | int] = {}
    if since is not None:
        params["since"] = since
    wait = min(max(wait, 0.0), MAX_WAIT)
    if wait > 0:
        params["wait"] = f"{wait:g}"
    return params, wait


@answer
def change_batch(data: dict[str, Any]) -> ChangeBatch:
    """A change-feed answer; an entry naming no usable path or no known op is skipped
    (logged): the mount could not show it anyway, and the feed goes on."""
    changes = validate.each(data["changes"], _change, source=SOURCE)
    return ChangeBatch(head=head_of(data["head"]), changes=changes)


def _change(data: dict[str, Any]) -> RemoteChange:
    path, op, version = data["path"], data["op"], data.get("version")
    if not isinstance(path, str):
        raise BadEntry("its path is not a string")
    validate.checked(Entry(path, "dir"))  # the path's rules
    if op not in _OPS:
        raise BadEntry(f"unknown change op {op!r:.60}")
    try:  # a version we cannot use is one we do not know: its directory is re-listed
        version = None if version is None else validate.version(version)
    except BadEntry:
        version = None
    try:  # (likewise a head: the change is then taken for someone else's)
        head = head_of(data.get("head"))
    except BadEntry:
        head = None
    return RemoteChange(path, op, version, head)
