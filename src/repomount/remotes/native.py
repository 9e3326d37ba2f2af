"""The adapter for repomount's own server (docs/native-api.md is its contract); the
wire format is in native_wire.py."""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import httpx
import trio

from repomount.remotes.base import (
    ApplyResult,
    Capabilities,
    Change,
    ChangeBatch,
    Conflict,
    Entry,
    Fetched,
    Listing,
    NotFound,
    ProtocolError,
    RemoteError,
    RepoInfo,
    Unauthorized,
    Write,
)
from repomount.remotes.http import DEFAULT_RETRY, RetryPolicy, file_chunks, json_object
from repomount.remotes.httpremote import HttpRemote, copy_body
from repomount.remotes.native_wire import (
    PER_OP_STATUSES,
    TreePage,
    applied,
    batch_key,
    change_batch,
    commit_body,
    content_length,
    content_range,
    etag,
    feed_request,
    file_entry,
    inline_writes,
    join_pages,
    operation,
    range_header,
    range_total,
    refused,
    repo_info,
    tree_page,
    with_target,
)

INLINE_MAX = 256 * 1024  # writes up to this size travel inside the commit as base64
INLINE_BUDGET = 4 * 1024 * 1024  # ... up to this much per commit: the JSON sits in memory
UPLOADS_AT_ONCE = 8  # blob uploads of one commit in flight together


class NativeRemote(HttpRemote):
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
    scheme = "native"
    label = "{base_url}/{repo}"
    root = "/v1/repos/{repo}"

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
        super().__init__(base_url, repo, token=token, retry=retry, transport=transport)
        self.page_size = page_size
        self.inline_max = inline_max
        self.inline_budget = inline_budget

    # ------------------------------------------------------------------ reading

    async def _info(self) -> RepoInfo:
        return repo_info(json_object(await self._http.request("GET", self._root)))

    def _info_not_found(self) -> str:
        return f"repo {self.repo!r} not found on {self.base_url}"

    def _info_unauthorized(self, exc: Unauthorized) -> str:
        if not self._http.has_token:
            hint = "it requires a token: set REPOMOUNT_TOKEN"
        elif exc.status == 403:
            hint = f"the token may not access repo {self.repo!r}"
        else:
            hint = "it rejected the token (check REPOMOUNT_TOKEN)"
        return f"not authorized by {self.base_url}: {hint}"

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        params: dict[str, str | int] = {"path": path, "limit": self.page_size}
        if recursive:
            params["recursive"] = 1
        pages: list[TreePage] = []
        while True:
            response = await self._http.request("GET", f"{self._root}/tree", params=params)
            pages.append(tree_page(json_object(response)))
            if not pages[-1].cursor:
                break
            params = {**params, "cursor": pages[-1].cursor}
        return join_pages(path, pages, recursive=recursive)

    async def stat(self, path: str) -> Entry | None:
        if path:
            try:
                response = await self._http.request("HEAD", self._file_url(path))
            except NotFound:
                pass
            else:
                entry = file_entry(path, response)
                if entry.kind == "symlink":
                    return await self._stat_symlink(entry)
                return entry
        try:  # not a file: a directory if it can be listed
            await self._http.request("GET", f"{self._root}/tree", params={"path": path, "limit": 1})
        except NotFound:
            return None
        return Entry(path=path, kind="dir")

    async def _stat_symlink(self, entry: Entry) -> Entry | None:
        """A symlink's entry with its target, which only its content (GET) holds."""
        try:
            response = await self._http.request("GET", self._file_url(entry.path))
        except NotFound:  # gone since the HEAD
            return None
        fresh = file_entry(entry.path, response)
        if fresh.kind != "symlink":  # replaced since the HEAD: a file now
            return fresh
        return with_target(fresh, response.content)

    async def _fetch(
        self, path: str, dest: BinaryIO, version: str | None, start: int, end: int | None
    ) -> Fetched:
        headers = {"If-Match": f'"{version}"'} if version is not None else {}
        try:
            return await self._download(path, dest, headers, start, end)
        except Conflict as exc:  # If-Match failed: say which version is there now
            if exc.current is None:
                entry = await self.stat(path)
                exc.current = entry.version if entry is not None else None
            raise

    async def _download(
        self, path: str, dest: BinaryIO, headers: dict[str, str], start: int, end: int | None
    ) -> Fetched:
        url = self._file_url(path)
        if end == start:  # nothing to fetch, but the caller still learns version and size
            response = await self._http.request("HEAD", url, headers=headers)
            return Fetched(etag(response), content_length(response), 0)
        if start > 0 or end is not None:
            headers["Range"] = range_header(start, end)
        async with self._http.stream("GET", url, headers=headers, ok=(416,)) as response:
            version = etag(response)
            if response.status_code == 416:  # starts at or past the end of the file
                return Fetched(version, range_total(response), 0)
            if response.status_code == 206:
                first, total = content_range(response)
                if first != start:
                    raise ProtocolError(f"asked for bytes from {start}, got from {first}")
                return Fetched(version, total, (await copy_body(response, dest)).written)
            # A whole body: hash it all, keep the asked-for slice (a server may ignore Range).
            copied = await copy_body(response, dest, start=start, end=end)
        if version is not None and copied.sha256 != version:
            raise ProtocolError(
                f"content of {path!r} does not match its version: "
                f"got sha256 {copied.sha256}, ETag says {version}"
            )
        return Fetched(version, copied.size, copied.written)

    # ------------------------------------------------------------------ writing

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        if not changes:
            return ApplyResult(head=base, outcomes=[])
        inline = inline_writes(changes, self.inline_max, self.inline_budget)
        # One worker-thread call reads them all (not one per file).
        contents = await trio.to_thread.run_sync(
            lambda: {i: source.read_bytes() for i, source in inline.items()}
        )
        # The others' blobs first: each distinct content once, several at a time (at WAN
        # latency one at a time costs a round trip per file).
        blobs = {
            c.sha256: c.source
            for i, c in enumerate(changes)
            if isinstance(c, Write) and i not in contents
        }
        await self._upload_blobs(blobs)
        ops = [operation(c, inline=contents.get(i)) for i, c in enumerate(changes)]
        key = batch_key(self.repo, changes)
        body = commit_body(ops, author=_author(), base=base, key=key)
        url = f"{self._root}/commits"
        # Without a key a replay could commit twice; send it once, unless it never left.
        response = await self._http.request(
            "POST", url, json=body, idempotent=key is not None, ok=PER_OP_STATUSES
        )
        if response.status_code in PER_OP_STATUSES:
            return self._refused(response, url, len(changes))
        return applied(json_object(response), len(changes))

    def _refused(self, response: httpx.Response, url: str, count: int) -> ApplyResult:
        """A commit refused as a whole: per-change outcomes where the server blames
        single operations, else the error is raised (see native_wire.refused)."""
        error = self._http.error_for(response, context=f"{self._http.name}: POST {url}")
        details = self._http.error_body(response).details
        outcomes = refused(error, details, count)
        return ApplyResult(head=response.headers.get("X-Repo-Head"), outcomes=outcomes)

    async def _upload_blobs(self, blobs: dict[str, Path]) -> None:
        """Upload these (sha256 -> file), UPLOADS_AT_ONCE at a time; the first failure
        stops the rest and is raised as itself (not inside an exception group)."""
        if len(blobs) <= 1:
            for sha256, source in blobs.items():
                await self._upload_blob(source, sha256)
            return
        limit = trio.Semaphore(UPLOADS_AT_ONCE)
        failed: list[RemoteError] = []
        async with trio.open_nursery() as nursery:

            async def one(sha256: str, source: Path) -> None:
                async with limit:
                    try:
                        await self._upload_blob(source, sha256)
                    except RemoteError as e:
                        failed.append(e)
                        nursery.cancel_scope.cancel()

            for sha256, source in blobs.items():
                nursery.start_soon(one, sha256, source)
        if failed:
            raise failed[0]

    async def _upload_blob(self, source: Path, sha256: str) -> None:
        """Stream a large file to the content-addressed blob store; a retry re-reads it."""
        size = (await trio.Path(source).stat()).st_size
        await self._http.request(
            "PUT",
            f"{self._root}/blobs/{sha256}",
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            content=file_chunks(source),
            idempotent=True,  # the URL names the content: storing it twice is harmless
        )

    # ------------------------------------------------------------------ change feed

    async def changes(self, since: str | None, *, wait: float = 0.0) -> ChangeBatch:
        params, timeout = feed_request(since, wait)
        response = await self._http.request(
            "GET", f"{self._root}/changes", params=params, timeout=timeout
        )
        return change_batch(json_object(response))

    # ------------------------------------------------------------------ helpers

    def _file_url(self, path: str) -> str:
        return self._path_url("files", path)


def _author() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
