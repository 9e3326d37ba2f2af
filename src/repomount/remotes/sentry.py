"""The adapter for Sentry release files (SRC `sentry:ORG/PROJECT/RELEASE`, or
`sentry:ORG//RELEASE` for a release of the organization); docs/remotes.md ("Sentry")
says what each operation becomes on the wire.

Reads: the file list (100 a page, `Link` cursors) serves every listing, kept a few
seconds as a snapshot; a file is downloaded by id (`?download=1`) and its SHA-1, the
version token Sentry lists, checked. Writes: the API has no precondition at all, so
the adapter checks each file's listed `sha1` right before changing it: a create is an
upload (Sentry refuses a taken name, 409), a replace a check, a delete by id and an
upload, a delete a check and a delete, a rename a check and a `PUT {name}`. What
someone else does between the check and the request is the race window documented.

sentry_changes.py sends the changes; sentry_wire.py parses the answers and builds the
upload bodies; sentry_source.py reads the SRC string and the credentials.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Sequence
from typing import IO, Any, BinaryIO, Unpack
from urllib.parse import quote

import cachetools
import httpx
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
    RepoInfo,
    Unauthorized,
)
from repomount.remotes.httpremote import CHUNK, HttpOptions, HttpRemote, apply_each
from repomount.remotes.limits import MAX_LISTING_ENTRIES, decode_json
from repomount.remotes.sentry_changes import ChangeSender
from repomount.remotes.sentry_wire import (
    Artifact,
    ReleaseTree,
    artifacts,
    next_cursor,
    release_version,
)

log = logging.getLogger(__name__)

DEFAULT_URL = "https://sentry.io"
TOKEN_ENV = "SENTRY_AUTH_TOKEN"
PER_PAGE = 100  # the API's most
SNAPSHOT_TTL = 2.0  # seconds a listing of the release serves lookups
RATE = 40.0  # requests a second at most: Sentry's limit on an organization's release files
HASHES_KEPT = 65536  # sha256 -> sha1 of contents this adapter wrote or read


class SentryRemote(HttpRemote):
    capabilities = Capabilities(
        conditional_write=False,  # no precondition anywhere: the adapter checks sha1 first
        atomic_batch=False,  # one request per file
        rename=True,  # PUT {name}; a directory is renamed file by file
        delete=True,
        empty_dirs=False,  # names are flat strings: directories exist through files
        ranged_read=False,  # downloads have no Range
        change_feed=False,
        binary_content=True,
        recursive_listing=True,  # one (paged) list holds the whole release
        file_modes=False,
        symlinks=False,
        max_batch_ops=100,
    )
    scheme = "sentry"
    label = "sentry {base_url}"
    root = "{base_url}/api/0"

    def file_name_problem(self, name: str) -> str | None:
        # Sentry refuses a file name whose last part holds one of "\n\t\r\f\v\\" (400,
        # "File name must not contain special whitespace characters"); the control
        # characters no mount makes anywhere (paths.control_character_problem).
        if "\\" in name:
            return "holds a backslash, which Sentry refuses in a file's name"
        return None

    def __init__(
        self,
        org: str,
        project: str | None,
        release: str,
        *,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        dist: str | None = None,
        snapshot_ttl: float = SNAPSHOT_TTL,
        rate: float = RATE,
        **http: Unpack[HttpOptions],
    ) -> None:
        super().__init__(base_url, f"{org}/{project or ''}/{release}", token=token, **http)
        self.org, self.project, self.release, self.dist = org, project, release, dist
        level = (
            f"projects/{quote(org, safe='')}/{quote(project, safe='')}"
            if project
            else f"organizations/{quote(org, safe='')}"
        )
        self._root = f"{self.base_url}/api/0/{level}/releases/{quote(release, safe='')}"
        self.snapshot_ttl = snapshot_ttl
        self._tree: ReleaseTree | None = None
        self._tree_lock = trio.Lock()
        self._writes = 0  # bumped by every write: a listing begun before one is not kept
        self._interval = 1.0 / rate
        self._next_request = 0.0
        self._sha1: cachetools.LRUCache[str, str] = cachetools.LRUCache(
            HASHES_KEPT
        )  # sha256 -> sha1
        self._changes = ChangeSender(self)

    @property
    def files_url(self) -> str:
        """The URL of the release's files (a file's: this + its id + "/")."""
        return f"{self._root}/files/"

    @property
    def identity(self) -> str:
        dist = f"?dist={quote(self.dist, safe='')}" if self.dist is not None else ""
        return f"{self.scheme}:{self.base_url}/{self.repo}{dist}"

    def version_of(self, sha256: str) -> str | None:
        return self._sha1.get(sha256)

    def remember(self, sha256: str, sha1: str) -> None:
        self._sha1[sha256] = sha1

    # ------------------------------------------------------------------ requests

    async def _pace(self) -> None:
        """At most `rate` requests a second (a 429 is retried after its Retry-After)."""
        now = trio.current_time()
        start = max(now, self._next_request)
        self._next_request = start + self._interval
        if start > now:
            await trio.sleep_until(start)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        await self._pace()
        return await self._http.request(method, url, **kwargs)

    # ------------------------------------------------------------------ reading

    async def _info(self) -> RepoInfo:
        data = json_object(await self.request("GET", f"{self._root}/"))
        return RepoInfo(name=release_version(data), head=None)

    def _info_not_found(self) -> str:
        where = f"{self.org}/{self.project}" if self.project else f"organization {self.org}"
        return f"no release {self.release!r} in {where} on {self.base_url}"

    def _info_unauthorized(self, exc: Unauthorized) -> str:
        if not self._http.has_token:
            return f"{self.base_url} requires an auth token: set {TOKEN_ENV}"
        return f"{self.base_url} refused the auth token (check {TOKEN_ENV} and its scopes)"

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        tree = await self._current_tree()
        entries = tree.listing(path, recursive=recursive)
        if entries is None:
            raise NotFound(f"{path!r} is not a directory in {self.identity}")
        return Listing(path=path, head=None, entries=entries, recursive=recursive)

    async def stat(self, path: str) -> Entry | None:
        return (await self._current_tree()).entry(path)

    async def _fetch(
        self, path: str, dest: BinaryIO, version: str | None, start: int, end: int | None
    ) -> Fetched:
        for fresh in (False, True):
            found = (await self._current_tree(fresh=fresh)).files.get(path)
            if found is None:
                if fresh:
                    raise NotFound(f"no file {path!r} in {self.identity}")
                continue
            if version is not None and found.sha1 != version:
                if fresh:
                    raise Conflict(
                        f"{path!r} is at {found.sha1}, not {version}", current=found.sha1
                    )
                continue
            try:
                return await self._download(found, dest, version, start, end)
            except NotFound:
                continue  # replaced since it was listed (a new id): list again
        raise NotFound(f"{path!r} in {self.identity} kept changing while it was read")

    async def _download(
        self, found: Artifact, dest: BinaryIO, version: str | None, start: int, end: int | None
    ) -> Fetched:
        url = f"{self.files_url}{quote(found.id, safe='')}/"
        if version is None:
            return await self._copy(url, dest, start, end)
        # The version is known once every byte is in: keep them aside until then, so
        # that `dest` never receives another version's content.
        with tempfile.TemporaryFile() as spool:
            fetched = await self._copy(url, spool, start, end)
            if fetched.version != version:
                raise Conflict(
                    f"{found.path!r} is at {fetched.version}, not {version}",
                    current=fetched.version,
                )
            spool.seek(0)
            while chunk := spool.read(CHUNK):
                dest.write(chunk)
        return fetched

    async def _copy(self, url: str, dest: IO[bytes], start: int, end: int | None) -> Fetched:
        sha1, sha256 = hashlib.sha1(), hashlib.sha256()
        pos = written = 0
        await self._pace()
        async with self._http.stream("GET", url, params={"download": "1"}) as response:
            async for chunk in response.aiter_bytes(CHUNK):
                sha1.update(chunk)
                sha256.update(chunk)
                lo = max(start - pos, 0)
                hi = len(chunk) if end is None else min(end - pos, len(chunk))
                if lo < hi:
                    dest.write(chunk[lo:hi])
                    written += hi - lo
                pos += len(chunk)
        self.remember(sha256.hexdigest(), sha1.hexdigest())
        return Fetched(sha1.hexdigest(), pos, written)

    async def _current_tree(self, *, fresh: bool = False) -> ReleaseTree:
        """The release's files (of our dist) from a listing at most `snapshot_ttl` old."""
        async with self._tree_lock:  # concurrent lookups wait for one listing
            tree = self._tree
            if (
                not fresh
                and tree is not None
                and trio.current_time() - tree.taken < self.snapshot_ttl
            ):
                return tree
            writes, taken = self._writes, trio.current_time()
            tree = ReleaseTree(await self.list_files(), taken)
            if writes == self._writes:  # no write of ours landed meanwhile
                self._tree = tree
            return tree

    async def list_files(self, queries: Sequence[str] = ()) -> list[Artifact]:
        """Every file of our dist, all pages (with `queries`: those whose name holds one)."""
        found: list[Artifact] = []
        cursor = ""
        seen = {cursor}
        while True:
            params: list[tuple[str, str | int]] = [("per_page", PER_PAGE), ("cursor", cursor)]
            params += [("query", q) for q in queries]
            try:
                response = await self.request("GET", self.files_url, params=params)
            except ProtocolError as error:
                if error.status == 400 and cursor:
                    raise ProtocolError(
                        f"{self.identity}: the release has more files than Sentry lists "
                        f"({len(found)} listed): {error.message}",
                        status=400,
                    ) from error
                raise
            try:
                page = decode_json(response.content)
            except ValueError as error:
                raise ProtocolError(
                    f"{self.identity}: the file list is not JSON ({error})"
                ) from None
            found += [a for a in artifacts(page) if a.dist == self.dist]
            cursor = next_cursor(response.headers.get("link")) or ""
            if not cursor or not page:  # (an empty page has nothing after it either)
                return found
            if cursor in seen:
                raise ProtocolError(f"{self.identity}: the file list's pages repeat ({cursor})")
            seen.add(cursor)
            if len(seen) * PER_PAGE > MAX_LISTING_ENTRIES:
                raise ProtocolError(f"{self.identity}: over {MAX_LISTING_ENTRIES} files")

    def _forget_tree(self) -> None:
        self._tree = None
        self._writes += 1

    # ------------------------------------------------------------------ writing

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        try:
            outcomes = await apply_each(changes, self._changes.apply_one)
        finally:
            self._forget_tree()
        return ApplyResult(head=None, outcomes=outcomes)
