"""The adapter for Oxen repositories (SRC `oxen:NS/REPO[@BRANCH]`, branch `main` by
default); Oxen's API (docs/remotes.md, "Oxen") is the wire contract,
docs/remotes.md ("Oxen") what each operation becomes.

Reads: `GET /dir/{rev}/{path}` (paged; `depth=-1` lists a whole subtree at once),
`/meta`, and `/file` downloads checked against the entry's xxh3-128 hash: bytes that
match neither the version asked for nor the file's current hash are an error (EIO),
never served. A file's version is its hash, the tree's the branch head's commit id.

Writes: one batch is one workspace commit. The workspace is opened first (its commit is
the branch head the batch is checked against), the preconditions are checked there
(oxen_plan.py), then the files are added (gzipped parts), removals staged, and the
workspace committed to the branch; the server refuses (409) if a staged path changed on
the branch since the workspace's commit, and the batch is then decided again on the new
head. Renames are removals plus additions of the content, downloaded from that commit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
from collections.abc import Sequence
from functools import partial
from typing import IO, Any, BinaryIO, Unpack
from urllib.parse import quote

import cachetools
import trio

from repomount.remotes.answers import json_object
from repomount.remotes.base import (
    ApplyResult,
    Capabilities,
    Change,
    Conflict,
    Entry,
    Fetched,
    Listing,
    NotFound,
    ProtocolError,
    RemoteError,
    RepoInfo,
    Unauthorized,
    Unavailable,
    Write,
    run_limited,
)
from repomount.remotes.httpremote import CHUNK, HttpOptions, HttpRemote
from repomount.remotes.limits import MAX_LISTING_ENTRIES
from repomount.remotes.oxen_plan import DIR, Copy, Plan, check, paths_needed
from repomount.remotes.oxen_wire import (
    Upload,
    Xxh3,
    add_files_body,
    commit_id,
    commit_of_branch,
    dir_page,
    is_empty,
    meta_entry,
    new_workspace_id,
    url_path,
    workspace_body,
    workspace_commit,
)

log = logging.getLogger(__name__)

DEFAULT_URL = "https://hub.oxen.ai"
PAGE_SIZE = 1000  # entries per listing page
FEW_PATHS = 8  # a batch touching at most this many paths checks them one by one
PART_BYTES = 16 << 20  # content per add-files request
PART_FILES = 500  # files per add-files request
COMMIT_TRIES = 3  # a workspace found behind its branch is decided again, this often
HASHES_KEPT = 65536  # sha256 -> xxh3 of contents this adapter wrote or read


class OxenRemote(HttpRemote):
    capabilities = Capabilities(
        # The preconditions are checked on the workspace's commit, and the server
        # refuses to commit a workspace whose staged paths changed since (409).
        conditional_write=True,
        atomic_batch=True,  # one workspace commit: all or nothing
        rename=True,  # removal + addition in the same commit
        delete=True,
        empty_dirs=False,  # Oxen's trees hold files; a directory exists through them
        ranged_read=False,  # no Range on /file
        change_feed=False,
        binary_content=True,
        recursive_listing=True,  # /dir with depth=-1
        directory_listing=True,  # /dir of one directory, paged
        file_modes=False,
        symlinks=False,
        max_batch_ops=1000,
    )
    scheme = "oxen"
    label = "oxen {base_url}"
    root = "{base_url}/api/repos/{repo}"

    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        branch: str = "main",
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        author: tuple[str, str] | None = None,
        **http: Unpack[HttpOptions],
    ) -> None:
        super().__init__(base_url, f"{namespace}/{name}", token=token, **http)
        self.namespace, self.name, self.branch = namespace, name, branch
        self._root = f"{self.base_url}/api/repos/{quote(namespace, safe='')}/{quote(name, safe='')}"
        self.author = author or (f"repomount {socket.gethostname()}", "")
        self._xxh3: cachetools.LRUCache[str, str] = cachetools.LRUCache(
            HASHES_KEPT
        )  # sha256 -> xxh3
        self._no_branch = False  # info() found the repository but not the branch

    @property
    def identity(self) -> str:
        return f"oxen:{self.base_url}/{self.repo}@{self.branch}"

    def version_of(self, sha256: str) -> str | None:
        """The hash of content this adapter wrote or read (Oxen's hash is no SHA-256)."""
        return self._xxh3.get(sha256)

    def _remember(self, sha256: str, xxh3: str) -> None:
        self._xxh3[sha256] = xxh3

    # ------------------------------------------------------------------ reading

    async def _info(self) -> RepoInfo:
        return RepoInfo(name=self.name, head=await self._head())

    async def _head(self) -> str | None:
        """The branch's commit id; None in a repository with no commit yet."""
        try:
            data = await self._get(f"/branches/{url_path(self.branch)}")
        except NotFound:
            if is_empty(await self._get("")):
                return None
            self._no_branch = True
            raise NotFound(f"branch {self.branch!r} not found in {self.repo}") from None
        return commit_of_branch(data)

    def _info_not_found(self) -> str:
        if self._no_branch:
            where = f"oxen repository {self.repo} at {self.base_url}"
            return f"branch {self.branch!r} not found in {where}"
        return f"oxen repository {self.repo} not found at {self.base_url}"

    def _info_unauthorized(self, exc: Unauthorized) -> str:
        hint = "set OXEN_API_KEY" if not self._http.has_token else "check OXEN_API_KEY"
        return f"{self.base_url} refused access to {self.repo} ({hint})"

    async def _get(self, tail: str, **params: str | int) -> dict[str, Any]:
        return json_object(await self._http.request("GET", self._root + tail, params=params))

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        params: dict[str, str | int] = {"page_size": PAGE_SIZE}
        if recursive:
            params["depth"] = -1
        rev, page, entries = self.branch, 1, []
        head: str | None = None
        while True:
            try:
                data = await self._get(
                    f"/dir/{url_path(rev)}/{url_path(path)}", page=page, **params
                )
            except NotFound:
                if page == 1 and not path and await self._head() is None:
                    return Listing(path=path, head=None, entries=[], recursive=recursive)
                raise NotFound(f"{path!r} is not a directory in {self.identity}") from None
            got = dir_page(data, path)
            entries += got.entries
            if page == 1 and got.head is not None:
                head = rev = got.head  # later pages: the same commit, whatever the branch does
            if page >= got.total_pages:
                break
            page = self._next_page(page, path, len(entries))
        entries.sort(key=lambda e: e.path)
        return Listing(path=path, head=head, entries=entries, recursive=recursive)

    def _next_page(self, page: int, path: str, listed: int) -> int:
        """The page after `page`, unless the pages so far could hold, or the `listed`
        entries they held do, more entries than a listing may (a server naming ever
        more pages, of no entry or of more than PAGE_SIZE, is not followed for ever)."""
        if max(page * PAGE_SIZE, listed) >= MAX_LISTING_ENTRIES:
            raise ProtocolError(
                f"{self.identity}: listing of {path!r}: over {MAX_LISTING_ENTRIES} entries"
            )
        return page + 1

    async def stat(self, path: str) -> Entry | None:
        return await self._stat_at(self.branch, path)

    async def _stat_at(self, rev: str, path: str) -> Entry | None:
        if not path:
            return Entry(path="", kind="dir")
        try:
            data = await self._get(f"/meta/{url_path(rev)}/{url_path(path)}")
        except NotFound:
            return None
        return meta_entry(data, path)

    async def _fetch(
        self, path: str, dest: BinaryIO, version: str | None, start: int, end: int | None
    ) -> Fetched:
        """The whole file is downloaded into a spool and hashed; only bytes whose hash
        is the version asked for (or, with none, the file's current hash) reach `dest`."""
        with tempfile.TemporaryFile() as spool:
            got, size, sha = await self._download(self.branch, path, spool)
            expected = version
            if expected is None or got != expected:
                entry = await self.stat(path)
                if entry is None or entry.kind != "file":
                    raise NotFound(f"{path!r} is no file in {self.identity}")
                if entry.version != got:
                    message = (
                        f"{path!r}: the bytes downloaded hash to {got}, "
                        f"{self.identity} says {entry.version}"
                    )
                    log.error("%s: not served", message)
                    raise ProtocolError(message)
                if version is not None:
                    raise Conflict(f"{path!r} is at version {got}, not {version}", current=got)
            self._remember(sha, got)
            spool.seek(start)
            written = 0
            while end is None or start + written < end:
                want = CHUNK if end is None else min(CHUNK, end - start - written)
                chunk = spool.read(want)
                if not chunk:
                    break
                dest.write(chunk)
                written += len(chunk)
        return Fetched(got, size, written)

    async def _download(self, rev: str, path: str, out: IO[bytes]) -> tuple[str, int, str]:
        """(xxh3, size, sha256) of the file at `rev`, its bytes written to `out`."""
        url = f"{self._root}/file/{url_path(rev)}/{url_path(path)}"
        try:
            async with self._http.stream("GET", url) as response:
                h, sha, size = Xxh3(), hashlib.sha256(), 0
                async for chunk in response.aiter_bytes(CHUNK):
                    h.update(chunk)
                    sha.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
        except NotFound:
            raise NotFound(f"{path!r} is no file in {self.identity}") from None
        return h.hexdigest(), size, sha.hexdigest()

    # ------------------------------------------------------------------ writing

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        if not changes:
            return ApplyResult(head=base, outcomes=[])
        hashes = await trio.to_thread.run_sync(_hash_writes, changes)
        for i, change in enumerate(changes):
            if isinstance(change, Write):
                self._remember(change.sha256, hashes[i])
        for _ in range(COMMIT_TRIES):
            result = await self._apply_once(changes, hashes)
            if result is not None:
                return result
            log.info("%s: the branch moved under the workspace; deciding again", self.identity)
        raise Unavailable(f"{self.identity}: the branch kept moving during the commit")

    async def _apply_once(
        self, changes: Sequence[Change], hashes: dict[int, str]
    ) -> ApplyResult | None:
        """One try: the result, or None when the workspace was behind its branch."""
        workspace = new_workspace_id()
        ws_url = f"{self._root}/workspaces"
        data = json_object(
            await self._http.request(
                "PUT", ws_url, json=workspace_body(workspace, self.branch), idempotent=True
            )
        )
        at = workspace_commit(data)
        try:
            plan = check(changes, await self._tree_at(at, changes), hashes)
            if plan.aborted or plan.empty:
                return plan.result(at)
            try:
                await self._stage(workspace, at, plan)
                head = await self._commit(workspace, changes)
            except NotFound as e:  # the workspace went away (a server restart): again later
                raise Unavailable(f"{self.identity}: workspace lost: {e.message}") from e
        finally:
            with trio.CancelScope(shield=True):
                await self._drop_workspace(workspace)
        return None if head is None else plan.result(head or at)

    async def _tree_at(self, commit: str, changes: Sequence[Change]) -> dict[str, str]:
        """What the batch depends on at `commit`: path -> hash (or DIR)."""
        paths, subtrees = paths_needed(changes)
        tree: dict[str, str] = {}
        if len(paths) > FEW_PATHS:
            return await self._list_at(commit, "")
        found: dict[str, Entry | None] = {}

        async def one(path: str) -> None:
            found[path] = await self._stat_at(commit, path)

        # (a failure is raised as itself, not in a nursery's exception group)
        await run_limited([partial(one, p) for p in sorted(paths)], FEW_PATHS)
        for path, entry in found.items():
            if entry is not None:
                tree[path] = DIR if entry.kind == "dir" else entry.version or ""
        for path in subtrees:
            if tree.get(path) == DIR:
                tree.update(await self._list_at(commit, path))
        return tree

    async def _list_at(self, commit: str, path: str) -> dict[str, str]:
        """The tree below `path` at `commit`: path -> hash (or DIR), with what no mount
        can show as files of unknown hash (they move with their directory, and keep it
        from being deleted)."""
        tree: dict[str, str] = {}
        page = 1
        while True:
            data = await self._get(
                f"/dir/{url_path(commit)}/{url_path(path)}",
                page=page,
                page_size=PAGE_SIZE,
                depth=-1,
            )
            got = dir_page(data, path)
            tree.update((e.path, DIR if e.kind == "dir" else e.version or "") for e in got.entries)
            tree.update((hidden, "") for hidden in got.hidden)
            if page >= got.total_pages:
                return tree
            page = self._next_page(page, path, len(tree))

    async def _stage(self, workspace: str, at: str, plan: Plan) -> None:
        ws = f"{self._root}/workspaces/{quote(workspace, safe='')}"
        batch: list[Upload] = []
        size = 0
        for path, content in sorted(plan.adds.items()):
            data = await self._content(at, content)
            if batch and (size + len(data) > PART_BYTES or len(batch) >= PART_FILES):
                await self._add_files(ws, batch)
                batch, size = [], 0
            batch.append(Upload(path, data))
            size += len(data)
        if batch:
            await self._add_files(ws, batch)
        if plan.removes:
            await self._http.request(
                "DELETE", f"{ws}/files", json=sorted(plan.removes), idempotent=True
            )

    async def _content(self, at: str, content: Write | Copy) -> bytes:
        if isinstance(content, Write):
            return await trio.Path(content.source).read_bytes()
        with tempfile.TemporaryFile() as spool:
            got, _, _ = await self._download(at, content.src, spool)
            if got != content.version:
                raise ProtocolError(
                    f"{content.src!r} at {at} hashes to {got}, not {content.version}"
                )
            spool.seek(0)
            return spool.read()

    async def _add_files(self, ws: str, files: list[Upload]) -> None:
        boundary = f"repomount-{os.urandom(12).hex()}"
        body = await trio.to_thread.run_sync(add_files_body, files, boundary)
        await self._http.request(
            "POST",
            f"{ws}/files/",
            content=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            idempotent=True,  # staging the same content again changes nothing
        )

    async def _commit(self, workspace: str, changes: Sequence[Change]) -> str | None:
        """The new commit id; None when the workspace is behind its branch (409)."""
        name, email = self.author
        body = {"message": _message(changes), "author": name, "email": email}
        url = f"{self._root}/workspaces/{quote(workspace, safe='')}/merge/{url_path(self.branch)}"
        try:
            return commit_id(json_object(await self._http.request("POST", url, json=body)))
        except Conflict:
            return None
        except ProtocolError as e:
            if e.status == 422 and e.code == "no_changes":
                return ""  # everything staged was there already
            raise

    async def _drop_workspace(self, workspace: str) -> None:
        try:
            await self._http.request(
                "DELETE", f"{self._root}/workspaces/{quote(workspace, safe='')}", idempotent=True
            )
        except RemoteError as e:  # the server forgets it anyway; nothing depends on it
            log.debug("%s: workspace %s not deleted: %s", self.identity, workspace, e)


def _hash_writes(changes: Sequence[Change]) -> dict[int, str]:
    hashes: dict[int, str] = {}
    for i, change in enumerate(changes):
        if isinstance(change, Write):
            h = Xxh3()
            with open(change.source, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
            hashes[i] = h.hexdigest()
    return hashes


def _message(changes: Sequence[Change]) -> str:
    if len(changes) == 1:
        change = changes[0]
        what = type(change).__name__.lower()
        return f"repomount: {what} {getattr(change, 'path', getattr(change, 'dst', ''))}"
    return f"repomount: {len(changes)} changes"
