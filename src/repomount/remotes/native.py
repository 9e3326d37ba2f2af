"""The adapter for repomount's own server (docs/native-api.md is its contract); the
wire format is in native_wire.py, the packing of a commit's blobs in native_pack.py."""

from __future__ import annotations

import functools
import getpass
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import BinaryIO, cast

import httpx
import trio

from repomount.remotes.answers import json_object
from repomount.remotes.base import (
    ApplyResult,
    Capabilities,
    Change,
    ChangeBatch,
    Conflict,
    Content,
    Entry,
    Fetched,
    Listing,
    NotFound,
    ProtocolError,
    RepoInfo,
    TooLarge,
    Unauthorized,
    Write,
    run_limited,
)
from repomount.remotes.http import DEFAULT_RETRY, RetryPolicy, file_chunks
from repomount.remotes.httpremote import HttpRemote, copy_body
from repomount.remotes.limits import DEFAULT_TIMEOUTS, Timeouts
from repomount.remotes.native_bulk import read_tar
from repomount.remotes.native_pack import (
    ALONE_MIN,
    PACK_MAX,
    Blob,
    pack_body,
    pack_length,
    plan_uploads,
)
from repomount.remotes.native_pages import list_pages
from repomount.remotes.native_wire import (
    PER_OP_STATUSES,
    BlobRefused,
    applied,
    batch_key,
    blob_refused,
    change_batch,
    commit_body,
    content_length,
    content_range,
    etag,
    feed_request,
    file_entry,
    inline_writes,
    keeps_content,
    operation,
    range_header,
    range_total,
    refused,
    repo_info,
    staged_blob,
    with_target,
)

INLINE_MAX = 256 * 1024  # writes up to this size travel inside the commit as base64
INLINE_BUDGET = 4 * 1024 * 1024  # ... up to this much per commit: the JSON sits in memory
INLINE_TINY = 4 * 1024  # ... but only this small when a pack of blobs goes anyway
READ_HERE_MAX = 16 * 1024  # inline contents up to this much in all are read on the loop
UPLOADS_AT_ONCE = 8  # blob uploads (packs or single blobs) of one commit in flight together
PACKS_AT_ONCE = 4  # ... of which packs
READ_PATHS = 500  # paths per POST /read of a bulk read


def no_repo_message(base_url: str, repo: str) -> str:
    """What a 404 for repo `repo` means to a user."""
    return f"no repo {repo!r} on {base_url} (`repomount repo list {base_url}` lists them)"


def unauthorized_message(
    base_url: str, exc: Unauthorized, *, has_token: bool, repo: str | None = None
) -> str:
    """What a 401 or 403 from repomount's server means to a user."""
    if not has_token:
        return f"{base_url} requires a token: set REPOMOUNT_TOKEN"
    if exc.status == 403:
        what = f"repo {repo!r} on {base_url}" if repo else base_url
        return f"the token may not access {what}"
    return f"the token was refused by {base_url} (check REPOMOUNT_TOKEN)"


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
        directory_listing=True,
        file_modes=True,
        file_mtimes=True,
        symlinks=True,
        staged_upload=True,
        upload_ahead=True,
        # A commit of this many operations is a few MB of JSON: one commit for a `cp -r`
        # of a few thousand files instead of several (the server takes up to 100,000).
        max_batch_ops=5000,
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
        page_size: int = 10_000,
        inline_max: int = INLINE_MAX,
        inline_budget: int = INLINE_BUDGET,
        pack_max: int = PACK_MAX,
        alone_min: int = ALONE_MIN,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url, repo, token=token, retry=retry, timeouts=timeouts, transport=transport
        )
        self.page_size = page_size
        self.inline_max = inline_max
        self.inline_budget = inline_budget
        self.pack_max = pack_max
        self.alone_min = alone_min
        # False once the server answered a pack with 404/405 (it predates POST /blobs)
        self.packs = True

    # ------------------------------------------------------------------ reading

    async def _info(self) -> RepoInfo:
        return repo_info(json_object(await self._http.request("GET", self._root)))

    def _info_not_found(self) -> str:
        return no_repo_message(self.base_url, self.repo)

    def _info_unauthorized(self, exc: Unauthorized) -> str:
        return unauthorized_message(
            self.base_url, exc, has_token=self._http.has_token, repo=self.repo
        )

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        params: dict[str, str | int] = {"path": path, "limit": self.page_size}
        if recursive:
            params["recursive"] = 1

        async def fetch(page: Mapping[str, str | int]) -> httpx.Response:
            return await self._http.request("GET", f"{self._root}/tree", params=page)

        return await list_pages(fetch, params, path, recursive)

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
                copied = await copy_body(response, dest, hashed=False)  # (a part: no check)
                return Fetched(version, total, copied.written)
            # A whole body: hash it all, keep the asked-for slice (a server may ignore Range).
            copied = await copy_body(response, dest, start=start, end=end)
        if version is not None and copied.sha256 != version:
            raise ProtocolError(
                f"content of {path!r} does not match its version: "
                f"got sha256 {copied.sha256}, ETag says {version}"
            )
        whole = start == 0 and copied.written == copied.size
        return Fetched(version, copied.size, copied.written, version is not None and whole)

    async def read_many(
        self,
        paths: Sequence[str],
        new_file: Callable[[], Path],
        got: Callable[[str, Fetched, Path], None],
        *,
        transfers: int = 4,
        sizes: Mapping[str, int] | None = None,
    ) -> None:
        """Whole files through POST /read, a tar stream of up to READ_PATHS files per
        request, `transfers` requests at a time. Each file's content is checked
        against its version before it is delivered; symlinks and missing paths are
        skipped; a member far larger than `sizes` says is refused before it is read."""
        unique = list(dict.fromkeys(paths))
        groups = [unique[i : i + READ_PATHS] for i in range(0, len(unique), READ_PATHS)]
        jobs = [partial(self._read_group, group, new_file, got, sizes or {}) for group in groups]
        if jobs:
            await run_limited(jobs, transfers)

    async def _read_group(
        self,
        paths: list[str],
        new_file: Callable[[], Path],
        got: Callable[[str, Fetched, Path], None],
        sizes: Mapping[str, int],
    ) -> None:
        url = f"{self._root}/read"
        # A read changes nothing: safe to send again.
        async with self._http.stream("POST", url, json={"paths": paths}, idempotent=True) as r:
            await read_tar(r.aiter_bytes(), f"POST {url}", set(paths), sizes, new_file, got)

    # ------------------------------------------------------------------ writing

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        if not changes:
            return ApplyResult(head=base, outcomes=[])
        inline = self._inline(changes)

        def read_inline() -> dict[int, bytes]:
            return {i: source.read_bytes() for i, source in inline.items()}

        # One worker-thread call reads them all (not one per file); a few KiB are read
        # here, for less than the hop to a thread and back (an fsync waits for it).
        if sum(cast(Write, changes[i]).size for i in inline) <= READ_HERE_MAX:
            contents = read_inline()
        else:
            contents = await trio.to_thread.run_sync(read_inline)
        # The others' blobs first: each distinct content once, in packs (big files on
        # their own), several requests at a time. A write of the content the server has
        # there (a new mode or mtime) uploads nothing.
        blobs = {
            c.sha256: Blob(c.sha256, c.source, c.size)
            for i, c in enumerate(changes)
            if isinstance(c, Write) and i not in contents and not keeps_content(c)
        }
        try:
            await self._upload_blobs(list(blobs.values()))
        except BlobRefused as refusal:  # (nothing committed: the head did not move)
            return ApplyResult(head=None, outcomes=blob_refused(changes, refusal))
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
        replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
        return applied(json_object(response), len(changes), replayed=replayed)

    def _refused(self, response: httpx.Response, url: str, count: int) -> ApplyResult:
        """A commit refused as a whole: per-change outcomes where the server blames
        single operations, else the error is raised (see native_wire.refused)."""
        error = self._http.error_for(response, context=f"{self._http.name}: POST {url}")
        details = self._http.error_body(response).details
        outcomes = refused(error, details, count)
        return ApplyResult(head=response.headers.get("X-Repo-Head"), outcomes=outcomes)

    def _inline(self, changes: Sequence[Change]) -> dict[int, Path]:
        """The writes (by index) that travel inside the commit as base64. When other
        blobs go in a pack anyway, moving a file into that pack costs no request, so
        only tiny ones (cheaper as base64 than as a tar member) stay inline."""
        inline = inline_writes(changes, self.inline_max, self.inline_budget)
        if self.packs and any(
            isinstance(c, Write)
            and i not in inline
            and not keeps_content(c)
            and c.size <= self.alone_min
            for i, c in enumerate(changes)
        ):
            tiny = min(self.inline_max, INLINE_TINY)
            inline = inline_writes(changes, tiny, self.inline_budget)
        return inline

    async def _upload_blobs(self, blobs: Sequence[Blob]) -> None:
        """Upload these: big ones alone, the rest in packs, UPLOADS_AT_ONCE requests
        (PACKS_AT_ONCE packs) at a time; the first failure stops the rest and is raised
        as itself (not inside an exception group)."""
        if not blobs:
            return
        if not self.packs:
            await self._upload_singly(blobs)
            return
        alone, packs = plan_uploads(blobs, pack_max=self.pack_max, alone_min=self.alone_min)
        pack_slots = trio.Semaphore(PACKS_AT_ONCE)

        async def one_pack(pack: list[Blob]) -> None:
            async with pack_slots:
                await self._upload_pack(pack)

        jobs = [partial(self._upload_blob, b) for b in alone]
        jobs += [partial(one_pack, p) for p in packs]
        await run_limited(jobs, UPLOADS_AT_ONCE)

    async def _upload_singly(self, blobs: Sequence[Blob]) -> None:
        await run_limited([partial(self._upload_blob, b) for b in blobs], UPLOADS_AT_ONCE)

    async def _upload_pack(self, pack: list[Blob]) -> None:
        """One POST /blobs with these blobs as a streamed tar; a retry re-reads the
        files. A server without the route (404/405), or one whose pack limit is
        smaller than this pack (413), gets them one by one instead."""
        response = await self._http.request(
            "POST",
            f"{self._root}/blobs",
            headers={"Content-Type": "application/x-tar", "Content-Length": str(pack_length(pack))},
            content=pack_body(pack),
            idempotent=True,  # each member is named by its content: storing twice is harmless
            ok=(404, 405, 413),
        )
        if response.status_code == 200:
            return
        await self._upload_singly(pack)  # an unknown repo is 404 here too, and raised
        if response.status_code != 413:
            self.packs = False  # the single uploads worked: the server has no packs

    async def _upload_blob(self, blob: Blob) -> None:
        """Stream a large file to the content-addressed blob store; a retry re-reads it."""
        size = (await trio.Path(blob.source).stat()).st_size
        try:
            await self._http.request(
                "PUT",
                f"{self._root}/blobs/{blob.sha256}",
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
                content=file_chunks(blob.source),
                idempotent=True,  # the URL names the content: storing it twice is harmless
            )
        except TooLarge as e:
            raise BlobRefused(blob.sha256, e) from e

    async def upload_ahead(self, contents: Sequence[Content]) -> set[str]:
        """As a commit's own uploads go: packs, big files alone. A server without packs
        gets only what a commit would not carry inline (a PUT per small file would
        cost more requests than it saves)."""
        floor = 0 if self.packs else self.inline_max
        blobs = [Blob(c.sha256, c.source, c.size) for c in contents if c.size > floor]
        await self._upload_blobs(blobs)
        return {b.sha256 for b in blobs}

    async def stage(self, body: Callable[[], AsyncIterator[bytes]]) -> str:
        """POST /blobs as octet-stream, streamed without a length as `body` yields: the
        server names the blob by what arrived. Sent once (a retry cannot rewind a body
        that follows a writer)."""
        response = await self._http.request(
            "POST",
            f"{self._root}/blobs",
            headers={"Content-Type": "application/octet-stream"},
            content=body,
            idempotent=False,
        )
        return staged_blob(json_object(response))

    # ------------------------------------------------------------------ change feed

    async def changes(self, since: str | None, *, wait: float = 0.0) -> ChangeBatch:
        params, held = feed_request(since, wait)
        timeouts = self._http.timeouts.holding(held)
        response = await self._http.request(
            "GET", f"{self._root}/changes", params=params, timeouts=timeouts
        )
        return change_batch(json_object(response))

    # ------------------------------------------------------------------ helpers

    def _file_url(self, path: str) -> str:
        return self._path_url("files", path)


@functools.cache
def _author() -> str:
    """Who commits (user@host), looked up once per process rather than for every save
    (without $USER or $LOGNAME that is a read of the user database)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
