"""The adapter for Relace Repos (`relace:REPO_ID`); docs/remotes.md ("Relace") says what
each operation becomes on the wire.

Reads: one `clone` gives every text file of the repo, so it serves all listings (kept a
few seconds as a snapshot: listing every directory costs one request); `GET /file`
gives a file's exact bytes. Relace has only a repo-wide `repo_head`, so a file's version
is the SHA-256 of its bytes. Writes: Relace has no conditional write; before a batch
the adapter reads the current content of every path it depends on and reports a
conflict where it differs from `expect`. A change made by someone else between that
check and the write is overwritten: that window is the price of the API.

relace_plan.py decides what a batch becomes; relace_wire.py parses and builds the JSON.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from functools import partial
from typing import IO, Any, BinaryIO, Unpack

import httpx
import trio

from repomount.remotes.answers import json_object
from repomount.remotes.base import (
    Aborted,
    ApplyResult,
    Capabilities,
    Change,
    Conflict,
    Conflicted,
    Entry,
    Failed,
    Fetched,
    Listing,
    NotFound,
    RemoteError,
    Rename,
    RepoInfo,
    Unauthorized,
    Unavailable,
    run_limited,
)
from repomount.remotes.endpoint import checked_url
from repomount.remotes.http import file_chunks
from repomount.remotes.httpremote import (
    CHUNK,
    WHOLE_REQUEST_ERRORS,
    HostedSource,
    HttpOptions,
    HttpRemote,
    copy_body,
)
from repomount.remotes.limits import DEFAULT_TIMEOUTS, Timeouts
from repomount.remotes.relace_plan import (
    Snapshot,
    WireDelete,
    WireOp,
    WireWrite,
    check,
    group,
    paths_to_check,
)
from repomount.remotes.relace_wire import clone_files, repo_head, repo_name, update_body

log = logging.getLogger(__name__)

DEFAULT_URL = "https://api.relace.run/v1"

SNAPSHOT_TTL = 2.0  # seconds a clone serves listings
# A clone answer holds every text file's content: read into memory up to this much.
MAX_CLONE = 512 << 20
INLINE_MAX = 1 << 20  # a text file up to this size may travel inside an update's JSON
INLINE_BUDGET = 8 << 20  # ... up to this much per update
MAX_OPS = 500  # operations per update
CHECKS_AT_ONCE = 8  # concurrent downloads when checking preconditions
MAX_UPLOAD = 50 << 20  # Relace's documented limit for a file ("50 MB", 413 beyond)


class RelaceRemote(HttpRemote):
    capabilities = Capabilities(
        conditional_write=False,  # no If-Match or expected head anywhere in the API
        # One update is all-or-none, but a batch may need several (phase order, binary
        # files go alone as PUT /file), and preconditions are checked client-side.
        atomic_batch=False,
        rename=True,  # files only; a directory is renamed file by file
        delete=True,
        empty_dirs=False,  # git: a directory exists only through its files
        ranged_read=False,  # GET /file has no Range
        change_feed=False,
        binary_content=True,  # via PUT/GET /file (clone lists text files only)
        recursive_listing=True,  # one clone holds the whole tree
        complete_listing=False,  # ... of text files: binary ones are left out
        file_modes=False,  # no mode (executable bit) over REST
        max_batch_ops=MAX_OPS,
    )
    scheme = "relace"
    label = "relace {base_url}"
    root = "{base_url}/repo/{repo}"
    reword_unreachable = False  # info() passes a transport failure on as it came

    def __init__(
        self,
        repo_id: str,
        *,
        token: str,
        endpoint: str = DEFAULT_URL,
        snapshot_ttl: float = SNAPSHOT_TTL,
        **http: Unpack[HttpOptions],
    ) -> None:
        super().__init__(endpoint, repo_id, token=token, **http)
        self.snapshot_ttl = snapshot_ttl
        self._snapshot: Snapshot | None = None
        self._snapshot_lock = trio.Lock()
        self._writes = 0  # bumped by every write: a clone begun before one is not kept
        # The service locks the repo for each write and refuses others meanwhile (423):
        # ours go one at a time (in parallel, a third of them refused each other).
        self._writing = trio.Lock()
        # Files we wrote that a clone may leave out (sent as raw bytes: maybe not text):
        # a directory rename must move them too, and no clone names them.
        self._maybe_unlisted: set[str] = set()

    # ------------------------------------------------------------------ reading

    async def _info(self) -> RepoInfo:
        data = json_object(await self._http.request("GET", self._root))
        # (GET has no repo_head)
        return RepoInfo(name=repo_name(data, self.repo), head=None, max_file_size=MAX_UPLOAD)

    def _info_not_found(self) -> str:
        return f"relace repo {self.repo!r} not found at {self.base_url}"

    def _info_unauthorized(self, exc: Unauthorized) -> str:
        return f"{self.base_url} rejected the API key for repo {self.repo!r} (check {KEY_ENV})"

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        snapshot = await self._current_snapshot()
        entries = snapshot.listing(path, recursive=recursive)
        if entries is None:
            raise NotFound(f"{path!r} is not a directory in relace repo {self.repo!r}")
        # No head: clone does not say which commit it read.
        return Listing(path=path, head=None, entries=entries, recursive=recursive)

    async def stat(self, path: str) -> Entry | None:
        snapshot = await self._current_snapshot()
        entry = snapshot.entry(path)
        if entry is not None or not path:
            return entry
        # Not in the clone: a binary file is left out of it, so ask for the file itself.
        found = await self._hash_file(path)
        if found is None:
            return None
        version, size = found
        return Entry(path, "file", size=size, version=version)

    async def _fetch(
        self, path: str, dest: BinaryIO, version: str | None, start: int, end: int | None
    ) -> Fetched:
        if version is None:
            return await self._download(path, dest, start, end)
        # The version is known only once every byte is in: keep them aside until then,
        # so that `dest` never receives the content of another version.
        with tempfile.TemporaryFile() as spool:
            fetched = await self._download(path, spool, start, end)
            if fetched.version != version:
                raise Conflict(
                    f"{path!r} is at version {fetched.version}, not {version}",
                    current=fetched.version,
                )
            spool.seek(0)
            while chunk := spool.read(CHUNK):
                dest.write(chunk)
        return fetched

    async def _download(self, path: str, dest: IO[bytes], start: int, end: int | None) -> Fetched:
        async with self._http.stream("GET", self._file_url(path)) as response:
            copied = await copy_body(response, dest, start=start, end=end)
        return Fetched(copied.sha256, copied.size, copied.written)

    async def _hash_file(self, path: str) -> tuple[str, int] | None:
        """(version, size) of the file at `path` now, or None when there is none."""
        try:
            async with self._http.stream("GET", self._file_url(path)) as response:
                copied = await copy_body(response, None)
        except NotFound:
            return None
        return copied.sha256, copied.size

    async def _current_snapshot(self, *, fresh: bool = False) -> Snapshot:
        """The repo's tree from a clone at most `snapshot_ttl` old (or a new one)."""
        async with self._snapshot_lock:  # concurrent listings wait for one clone
            snap = self._snapshot
            if (
                not fresh
                and snap is not None
                and trio.current_time() - snap.taken < (self.snapshot_ttl)
            ):
                return snap
            writes = self._writes
            snap = await self._clone()
            if writes == self._writes:  # no write of ours landed meanwhile
                self._snapshot = snap
            return snap

    async def _clone(self) -> Snapshot:
        started = trio.current_time()
        response = await self._http.request("GET", f"{self._root}/clone", max_body=MAX_CLONE)
        data = json_object(response)
        return Snapshot(clone_files(data), taken=started)

    def _forget_snapshot(self) -> None:
        self._snapshot = None
        self._writes += 1

    # ------------------------------------------------------------------ writing

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        if not changes:
            return ApplyResult(head=base, outcomes=[])
        current = await self._versions(paths_to_check(changes))
        tree = None
        if any(isinstance(c, Rename) and current[c.src] is None for c in changes):
            tree = await self._current_snapshot(fresh=True)  # the source may be a directory
            current |= await self._versions(self._left_out_under(changes, current, tree))
        checked = check(changes, current, tree)
        if any(isinstance(o, Conflicted) for o in checked.outcomes):
            # Someone else changed the repo: the next listing must not come from a
            # clone older than what the check just saw.
            self._forget_snapshot()
        if not checked.ops and None in current.values():
            await self.info()  # "absent" must not mean "no such repo" (raises NotFound)
        texts = await self._texts([op for op in checked.ops if isinstance(op, WireWrite)])
        requests = group(
            checked.ops,
            inline=lambda w: w.change.size if w.index in texts else None,
            max_ops=MAX_OPS,
            budget=INLINE_BUDGET,
        )
        outcomes = checked.outcomes
        head = base
        sent = False
        for n, request in enumerate(requests):
            try:
                head = await self._send(request, texts)
                self._note_unlisted(request, texts)
            except RemoteError as error:
                failure = await self._explain(error)
                # A NotFound here is the repo's: `_explain` made a missing path Aborted.
                if not sent and isinstance(failure.error, WHOLE_REQUEST_ERRORS):
                    raise failure.error from error
                for op in request:
                    outcomes[op.index] = failure
                aborted = Failed(Aborted(f"not sent: an earlier request failed ({error})"))
                for later in requests[n + 1 :]:
                    for op in later:
                        outcomes[op.index] = aborted
                break
            finally:
                self._forget_snapshot()
            sent = True
        return checked.result(head)

    def _left_out_under(
        self, changes: Sequence[Change], current: Mapping[str, str | None], tree: Snapshot
    ) -> set[str]:
        """Files we wrote below the directories these changes rename that the clone
        left out (binary ones): their versions are fetched, so that they move too."""
        dirs = [c.src + "/" for c in changes if isinstance(c, Rename) and current[c.src] is None]
        return {
            p
            for p in self._maybe_unlisted
            if p.startswith(tuple(dirs)) and tree.file_entry(p) is None
        }

    def _note_unlisted(self, request: Sequence[WireOp], texts: Mapping[int, str]) -> None:
        """Follow the files a clone may leave out through a request that went."""
        for op in request:
            if isinstance(op, WireWrite):
                if op.index in texts:
                    self._maybe_unlisted.discard(op.change.path)
                else:
                    self._maybe_unlisted.add(op.change.path)
            elif isinstance(op, WireDelete):
                self._maybe_unlisted.discard(op.path)
            elif op.src in self._maybe_unlisted:
                self._maybe_unlisted.discard(op.src)
                self._maybe_unlisted.add(op.dst)

    async def _versions(self, paths: set[str]) -> dict[str, str | None]:
        """The version of the file at each path now (None: no file), downloaded and
        hashed: the only way Relace tells a file's content."""
        found: dict[str, str | None] = {}

        async def one(path: str) -> None:
            result = await self._hash_file(path)
            found[path] = None if result is None else result[0]

        # (a failure is raised as itself, not in a nursery's exception group: the
        # write-back waits out an Unavailable, and a group took the mount down)
        await run_limited([partial(one, p) for p in sorted(paths)], CHECKS_AT_ONCE)
        return found

    async def _texts(self, writes: Sequence[WireWrite]) -> dict[int, str]:
        """The content of each write that can travel as text inside an update (within a
        memory budget; the others go as PUT /file, streamed from their spool files)."""
        texts: dict[int, str] = {}
        budget = INLINE_BUDGET
        for w in writes:
            if w.change.size > min(INLINE_MAX, budget):
                continue
            data = await trio.Path(w.change.source).read_bytes()
            try:
                texts[w.index] = data.decode("utf-8")
            except UnicodeDecodeError:
                continue  # binary: PUT /file
            budget -= len(data)
        return texts

    async def _send(self, request: Sequence[WireOp], texts: dict[int, str]) -> str | None:
        """One request for these operations; the new repo_head."""
        only = request[0]
        if len(request) == 1 and isinstance(only, WireWrite):
            source = only.change.source
            response = await self._write(
                "PUT",
                self._file_url(only.change.path),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(only.change.size),
                },
                content=file_chunks(source),
            )
        elif len(request) == 1 and isinstance(only, WireDelete):
            response = await self._write("DELETE", self._file_url(only.path))
        else:
            body = update_body(request, texts)
            response = await self._write("POST", f"{self._root}/update", json=body)
        return repo_head(json_object(response))

    async def _write(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A write request, sent again while the repo answers 423 (locked by another
        operation: nothing was done, so it is safe whatever the method)."""
        retry = 0
        while True:
            try:
                async with self._writing:
                    return await self._http.request(method, url, idempotent=False, **kwargs)
            except Unavailable as error:
                policy = self._http.retry
                if error.status != 423 or retry + 1 >= policy.attempts:
                    raise
                delay = max(policy.backoff(retry), error.retry_after or 0.0)
                log.info("relace %s: repo busy (423), retrying in %.2fs", self.repo, delay)
                await trio.sleep(delay)
                retry += 1

    async def _explain(self, error: RemoteError) -> Failed:
        """The outcome of changes whose request failed (nothing of it was applied)."""
        if isinstance(error, NotFound):
            # A path we had just checked went missing (someone else's write): the next
            # attempt re-checks and reports the conflict. Unless the repo itself is gone.
            try:
                await self.info()
            except NotFound as gone:
                return Failed(gone)
            except RemoteError:
                pass
            return Failed(Aborted(f"the repo changed meanwhile, send again ({error.message})"))
        return Failed(error)

    # ------------------------------------------------------------------ helpers

    def _file_url(self, path: str) -> str:
        return self._path_url("file", path)


# --------------------------------------------------------------------------- opening


SOURCE = HostedSource(
    scheme="relace",
    id_name="repo id",
    id_pattern=re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"),
    default_url=DEFAULT_URL,
    id_example="a UUID such as 0b4a2c9e-...; ",
)
KEY_ENV = SOURCE.key_env


def open_relace(
    src: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> RelaceRemote:
    """The adapter for `relace:REPO_ID`. The base URL is `endpoint`, else $RELACE_API_URL,
    else the service's; the key is `token`, else $RELACE_API_KEY. Raises ValueError with
    a one-line message when `src` (or the endpoint, or a missing key) is unusable."""
    src = src.strip()
    if src.lower().startswith("relace://"):  # a URL habit; a repo id is no host
        raise ValueError(
            f"bad remote {src!r}: no '//' after 'relace:' (expected {SOURCE.accepted})"
        )
    repo_id = SOURCE.parse_id(src)
    url = SOURCE.url(endpoint).strip()
    checked_url(
        url, what="Relace endpoint", secret_env=KEY_ENV, expected="http(s)://HOST[:PORT]/PATH"
    )
    key = token or os.environ.get(KEY_ENV)
    if not key:
        raise ValueError(f"{src} needs a Relace API key: set {KEY_ENV}")
    return RelaceRemote(repo_id, token=key, endpoint=url, timeouts=timeouts)
