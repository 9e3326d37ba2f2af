"""The adapter for repomount's own server (docs/native-api.md is its contract)."""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import getpass
import hashlib
import os
import socket
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import httpx
import trio

from repomount.remotes.base import (
    Aborted,
    Applied,
    ApplyResult,
    Capabilities,
    Change,
    ChangeBatch,
    Conflict,
    Conflicted,
    Delete,
    Entry,
    EntryKind,
    Expect,
    ExpectT,
    Failed,
    Fetched,
    Listing,
    Mkdir,
    NotFound,
    Outcome,
    ProtocolError,
    Remote,
    RemoteChange,
    Rename,
    RepoInfo,
    Symlink,
    Unauthorized,
    Unavailable,
    Write,
)
from repomount.remotes.http import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    HttpClient,
    RetryPolicy,
    file_chunks,
    json_object,
    parse_answer,
)

INLINE_MAX = 256 * 1024  # writes up to this size travel inside the commit as base64
INLINE_BUDGET = 4 * 1024 * 1024  # ... up to this much per commit: the JSON sits in memory
CHUNK = 256 * 1024
MAX_WAIT = 60.0  # the server holds a change-feed request at most this long

_KINDS: dict[str, EntryKind] = {"file": "file", "dir": "dir", "symlink": "symlink"}
_OPS = ("write", "delete", "mkdir")
# Statuses with which a commit may blame single operations (see NativeRemote._refused).
_PER_OP_STATUSES = (404, 409, 422)

T = TypeVar("T")


class NativeRemote(Remote):
    capabilities = Capabilities(
        conditional_write=True,
        atomic_batch=True,
        rename=True,
        delete=True,
        empty_dirs=True,
        ranged_read=True,
        change_feed=True,
        binary_content=True,
        recursive_listing=True,
        file_modes=True,
        symlinks=True,
    )

    def __init__(
        self,
        base_url: str,
        repo: str,
        *,
        token: str | None = None,
        page_size: int = 5000,
        inline_max: int = INLINE_MAX,
        inline_budget: int = INLINE_BUDGET,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.repo = repo
        self.page_size = page_size
        self.inline_max = inline_max
        self.inline_budget = inline_budget
        self._http = HttpClient(
            self.base_url,
            token=token,
            name=f"{self.base_url}/{repo}",
            retry=retry,
            transport=transport,
        )
        self._repo_url = f"/v1/repos/{quote(repo, safe='')}"

    @property
    def identity(self) -> str:
        return f"native:{self.base_url}/{self.repo}"

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ reading

    async def info(self) -> RepoInfo:
        where = f"{self.base_url}"
        try:
            data = json_object(await self._http.request("GET", self._repo_url))
        except NotFound as exc:
            raise NotFound(
                f"repo {self.repo!r} not found on {where}", status=exc.status, code=exc.code
            ) from exc
        except Unauthorized as exc:
            if not self._http.has_token:
                hint = "it requires a token: set REPOMOUNT_TOKEN"
            elif exc.status == 403:
                hint = f"the token may not access repo {self.repo!r}"
            else:
                hint = "it rejected the token (check REPOMOUNT_TOKEN)"
            raise Unauthorized(
                f"not authorized by {where}: {hint}", status=exc.status, code=exc.code
            ) from exc
        except Unavailable as exc:
            raise Unavailable(
                f"cannot reach {where}: {exc.message}",
                status=exc.status,
                retry_after=exc.retry_after,
                code=exc.code,
            ) from exc
        return _parse(lambda: RepoInfo(name=str(data["name"]), head=_head(data["head"])))

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        params: dict[str, str | int] = {"path": path, "limit": self.page_size}
        if recursive:
            params["recursive"] = 1
        entries: list[Entry] = []
        heads: list[str | None] = []
        while True:
            data = json_object(
                await self._http.request("GET", f"{self._repo_url}/tree", params=params)
            )
            head, page, cursor = _parse(partial(_tree_page, data))
            heads.append(head)
            entries.extend(page)
            if not cursor:
                break
            params = {**params, "cursor": cursor}
        # The cursor pins the first page's head, so every page must report that one.
        if len(set(heads)) > 1:
            raise ProtocolError(f"listing of {path!r} spans heads {sorted(set(map(str, heads)))}")
        head = heads[0]
        return Listing(path=path, head=head, entries=entries, recursive=recursive)

    async def stat(self, path: str) -> Entry | None:
        if path:
            try:
                response = await self._http.request("HEAD", self._file_url(path))
            except NotFound:
                pass
            else:
                entry = _parse(lambda: _file_entry(path, response))
                if entry.kind == "symlink":
                    return await self._stat_symlink(entry)
                return entry
        try:  # not a file: a directory if it can be listed
            await self._http.request(
                "GET", f"{self._repo_url}/tree", params={"path": path, "limit": 1}
            )
        except NotFound:
            return None
        return Entry(path=path, kind="dir")

    async def _stat_symlink(self, entry: Entry) -> Entry | None:
        """A symlink's entry with its target, which only its content (GET) holds."""
        try:
            response = await self._http.request("GET", self._file_url(entry.path))
        except NotFound:  # gone since the HEAD
            return None
        fresh = _parse(lambda: _file_entry(entry.path, response))
        if fresh.kind != "symlink":  # replaced since the HEAD: a file now
            return fresh
        content = response.content
        if hashlib.sha256(content).hexdigest() != fresh.version:
            raise ProtocolError(f"target of symlink {entry.path!r} does not match its version")
        try:
            target = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"target of symlink {entry.path!r} is not UTF-8") from exc
        return dataclasses.replace(fresh, target=target)

    async def read(
        self,
        path: str,
        dest: BinaryIO,
        *,
        version: str | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> Fetched:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        headers = {"If-Match": f'"{version}"'} if version is not None else {}
        try:
            return await self._read(path, dest, headers, offset, length)
        except Conflict as exc:  # If-Match failed: say which version is there now
            if exc.current is None:
                entry = await self.stat(path)
                exc.current = entry.version if entry is not None else None
            raise

    async def _read(
        self,
        path: str,
        dest: BinaryIO,
        headers: dict[str, str],
        offset: int,
        length: int | None,
    ) -> Fetched:
        url = self._file_url(path)
        if length == 0:  # nothing to fetch, but the caller still learns version and size
            response = await self._http.request("HEAD", url, headers=headers)
            return Fetched(_etag(response), _content_length(response), 0)
        ranged = offset > 0 or length is not None
        if ranged:
            last = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{last}"
        async with self._http.stream("GET", url, headers=headers, ok=(416,)) as response:
            etag = _etag(response)
            if response.status_code == 416:  # starts at or past the end of the file
                return Fetched(etag, _range_total(response), 0)
            if response.status_code == 206:
                start, total = _content_range(response)
                if start != offset:
                    raise ProtocolError(f"asked for bytes from {offset}, got from {start}")
                written = await _copy(response, dest)
                return Fetched(etag, total, written)
            # A whole body: hash it all, keep the asked-for slice (a server may ignore Range).
            digest = hashlib.sha256()
            end = None if length is None else offset + length
            written, total = await _copy_slice(response, dest, digest, offset, end)
        if etag is not None and digest.hexdigest() != etag:
            raise ProtocolError(
                f"content of {path!r} does not match its version: "
                f"got sha256 {digest.hexdigest()}, ETag says {etag}"
            )
        return Fetched(etag, total, written)

    # ------------------------------------------------------------------ writing

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        if not changes:
            return ApplyResult(head=base, outcomes=[])
        inline: dict[int, Path] = {}  # small writes travel inside the commit request
        budget = self.inline_budget
        for i, change in enumerate(changes):
            if isinstance(change, Write) and change.size <= min(self.inline_max, budget):
                inline[i] = change.source
                budget -= change.size
        # One worker-thread call reads them all (not one per file).
        contents = await trio.to_thread.run_sync(
            lambda: {i: source.read_bytes() for i, source in inline.items()}
        )
        ops = [await self._operation(c, inline=contents.get(i)) for i, c in enumerate(changes)]
        body: dict[str, Any] = {
            "message": f"repomount: {len(ops)} change{'s' if len(ops) > 1 else ''}",
            "author": _author(),
            "operations": ops,
        }
        if base is not None:
            body["base"] = base
        key = batch_key(self.repo, changes)
        if key is not None:
            body["idempotency_key"] = key
        url = f"{self._repo_url}/commits"
        # Without a key a replay could commit twice; send it once, unless it never left.
        response = await self._http.request(
            "POST", url, json=body, idempotent=key is not None, ok=_PER_OP_STATUSES
        )
        if response.status_code in _PER_OP_STATUSES:
            return self._refused(response, url, len(changes))
        data = json_object(response)

        def applied() -> list[Outcome]:
            results = data["results"]
            if len(results) != len(changes):
                raise ValueError(f"{len(results)} results for {len(changes)} operations")
            return [Applied(version=r.get("version")) for r in results]

        return ApplyResult(head=_parse(lambda: _head(data["head"])), outcomes=_parse(applied))

    def _refused(self, response: httpx.Response, url: str, count: int) -> ApplyResult:
        """A commit refused as a whole: nothing was applied. When the server names the
        operations at fault (failed preconditions, or an `index` in the error) the
        outcome is per change; otherwise (unknown repo, reused key) the error is raised."""
        error = self._http.error_for(response, context=f"{self._http.name}: POST {url}")
        details = self._http.error_body(response).details
        aborted = Failed(Aborted(f"not applied: another change of the batch failed ({error})"))
        result: list[Outcome] = [aborted] * count
        if error.code == "conflict":

            def conflicted() -> None:
                found = details["conflicts"]
                if not found:
                    raise ValueError("a conflict without conflicts")
                for conflict in found:
                    current = conflict.get("current")
                    result[int(conflict["index"])] = Conflicted(
                        current=None if current is None else str(current)
                    )

            _parse(conflicted)
        else:
            index = details.get("index")
            if not isinstance(index, int) or not 0 <= index < count:
                raise error
            if error.code == "unknown_blob":  # collected since we uploaded it: upload again
                error = Unavailable(error.message, status=error.status, code=error.code)
            result[index] = Failed(error)
        return ApplyResult(head=response.headers.get("X-Repo-Head"), outcomes=result)

    async def _operation(self, change: Change, *, inline: bytes | None) -> dict[str, Any]:
        op: dict[str, Any]
        if isinstance(change, Write):
            op = {"op": "write", "path": change.path}
            if inline is not None:
                op["content_b64"] = base64.b64encode(inline).decode("ascii")
            else:
                await self._upload_blob(change.source, change.sha256)
                op["blob"] = change.sha256
            if change.mode is not None:
                op["mode"] = change.mode & 0o7777
        elif isinstance(change, Delete):
            op = {"op": "delete", "path": change.path}
        elif isinstance(change, Rename):
            op = {"op": "rename", "from": change.src, "to": change.dst}
            expect_to = _expect(change.expect_to)
            if expect_to is not None:
                op["expect_to"] = expect_to
        elif isinstance(change, Symlink):
            op = {"op": "symlink", "path": change.path, "target": change.target}
        elif isinstance(change, Mkdir):
            return {"op": "mkdir", "path": change.path}
        else:  # pragma: no cover - the Change union is closed
            raise TypeError(f"not a change: {change!r}")
        expect = _expect(change.expect)
        if expect is not None:
            op["expect"] = expect
        return op

    async def _upload_blob(self, source: Path, sha256: str) -> None:
        """Stream a large file to the content-addressed blob store; a retry re-reads it."""
        size = (await trio.Path(source).stat()).st_size
        await self._http.request(
            "PUT",
            f"{self._repo_url}/blobs/{sha256}",
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            content=file_chunks(source),
            idempotent=True,  # the URL names the content: storing it twice is harmless
        )

    def version_of(self, sha256: str) -> str | None:
        return sha256  # a file's version is the SHA-256 of its content

    # ------------------------------------------------------------------ change feed

    async def changes(self, since: str | None, *, wait: float = 0.0) -> ChangeBatch:
        params: dict[str, str | int] = {}
        if since is not None:
            params["since"] = since
        wait = min(max(wait, 0.0), MAX_WAIT)
        if wait > 0:
            params["wait"] = f"{wait:g}"
        timeout = (
            DEFAULT_TIMEOUT
            if wait <= 0
            else httpx.Timeout(
                DEFAULT_TIMEOUT.connect or 10.0,
                read=wait + (DEFAULT_TIMEOUT.read or 60.0),
            )
        )
        response = await self._http.request(
            "GET", f"{self._repo_url}/changes", params=params, timeout=timeout
        )
        data = json_object(response)

        def batch() -> ChangeBatch:
            changes = []
            for c in data["changes"]:
                if c["op"] not in _OPS:
                    raise ValueError(f"unknown change op {c['op']!r}")
                version = c.get("version")
                changes.append(
                    RemoteChange(str(c["path"]), c["op"], None if version is None else str(version))
                )
            return ChangeBatch(head=_head(data["head"]), changes=changes)

        return _parse(batch)

    # ------------------------------------------------------------------ helpers

    def _file_url(self, path: str) -> str:
        return f"{self._repo_url}/files/{quote(path, safe='/')}"


# --------------------------------------------------------------------------- module helpers


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


async def _copy(response: httpx.Response, dest: BinaryIO) -> int:
    written = 0
    async for chunk in response.aiter_bytes(CHUNK):
        dest.write(chunk)
        written += len(chunk)
    return written


async def _copy_slice(
    response: httpx.Response, dest: BinaryIO, digest: Any, start: int, end: int | None
) -> tuple[int, int]:
    """Hash the whole body, write bytes [start, end) of it; return (written, total)."""
    pos = written = 0
    async for chunk in response.aiter_bytes(CHUNK):
        digest.update(chunk)
        lo, hi = max(start - pos, 0), len(chunk) if end is None else min(end - pos, len(chunk))
        if lo < hi:
            dest.write(chunk[lo:hi])
            written += hi - lo
        pos += len(chunk)
    return written, pos


def _expect(expect: ExpectT) -> str | None:
    if expect is Expect.ANY:
        return None
    if expect is Expect.ABSENT:
        return "absent"
    assert isinstance(expect, str)
    return expect


def _author() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _parse(build: Callable[[], T]) -> T:
    return parse_answer(build, "the server")


def _head(value: object) -> str | None:
    return None if value is None else str(value)


def _tree_page(data: dict[str, Any]) -> tuple[str | None, list[Entry], str | None]:
    cursor = data.get("next_cursor")
    entries = [_entry(e) for e in data["entries"]]
    return _head(data["head"]), entries, None if cursor is None else str(cursor)


def _entry(data: dict[str, Any]) -> Entry:
    kind = _KINDS[data["type"]]
    mtime, mode, version = data.get("mtime"), data.get("mode"), data.get("version")
    target = None
    if kind == "symlink":
        target = data["target"]
        if not isinstance(target, str) or not target:
            raise ValueError(f"symlink {data['path']!r} without a target")
    return Entry(
        path=str(data["path"]),
        kind=kind,
        size=int(data.get("size") or 0),
        version=None if version is None else str(version),
        mtime=None if mtime is None else float(mtime),
        mode=None if mode is None else int(mode),
        target=target,
    )


def _file_entry(path: str, response: httpx.Response) -> Entry:
    """The entry a HEAD or GET answer describes (a symlink's still without its target)."""
    modified = response.headers.get("Last-Modified")
    mode = response.headers.get("X-Repomount-Mode")
    kind = response.headers.get("X-Repomount-Type", "file")
    if kind not in ("file", "symlink"):
        raise ValueError(f"X-Repomount-Type {kind!r}")
    return Entry(
        path=path,
        kind="symlink" if kind == "symlink" else "file",
        size=_content_length(response),
        version=_etag(response),
        mtime=email.utils.parsedate_to_datetime(modified).timestamp() if modified else None,
        mode=int(mode, 8) if mode else None,
    )


def _etag(response: httpx.Response) -> str | None:
    value = response.headers.get("ETag")
    if not value:
        return None
    value = value.strip().removeprefix("W/")
    return value.strip('"')


def _content_length(response: httpx.Response) -> int:
    value = response.headers.get("Content-Length")
    if value is None:
        raise ProtocolError(f"{response.request.url.path}: no Content-Length")
    return int(value)


def _content_range(response: httpx.Response) -> tuple[int, int]:
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


def _range_total(response: httpx.Response) -> int:
    """The size from a 416's `Content-Range: bytes */total`."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.rsplit("/", 1)[1])
    except (IndexError, ValueError) as exc:
        raise ProtocolError(f"bad Content-Range {value!r} on 416") from exc
