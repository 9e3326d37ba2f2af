"""The adapter for Relace Repos (`relace:REPO_ID`); ../shared/reference/remote-relace.md is
the wire contract, docs/remotes.md ("Relace") what each operation becomes.

Reads: one `clone` gives every text file of the repo, so it serves all listings (kept a
few seconds as a snapshot: listing every directory costs one request); `GET /file`
gives a file's exact bytes. Relace has only a repo-wide `repo_head`, so a file's version
is the SHA-256 of its bytes. Writes: Relace has no conditional write; before a batch
the adapter reads the current content of every path it depends on and reports a
conflict where it differs from `expect`. A change made by someone else between that
check and the write is overwritten: that window is the price of the API.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from typing import IO, Any, BinaryIO, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import trio

from repomount.paths import InvalidPathError, validate_path
from repomount.remotes.base import (
    Aborted,
    Applied,
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
    Remote,
    RemoteError,
    Rename,
    RepoInfo,
    Unauthorized,
    Unavailable,
)
from repomount.remotes.http import (
    DEFAULT_RETRY,
    HttpClient,
    RetryPolicy,
    file_chunks,
    json_object,
    parse_answer,
)
from repomount.remotes.relace_plan import (
    RemoteFile,
    Snapshot,
    WireDelete,
    WireOp,
    WireWrite,
    check,
    group,
    paths_to_check,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_URL = "https://api.relace.run/v1"
URL_ENV = "RELACE_API_URL"
KEY_ENV = "RELACE_API_KEY"
ACCEPTED = "relace:REPO_ID"
REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

SNAPSHOT_TTL = 2.0  # seconds a clone serves listings
INLINE_MAX = 1 << 20  # a text file up to this size may travel inside an update's JSON
INLINE_BUDGET = 8 << 20  # ... up to this much per update
MAX_OPS = 500  # operations per update
CHECKS_AT_ONCE = 8  # concurrent downloads when checking preconditions
CHUNK = 256 << 10


class RelaceRemote(Remote):
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
        file_modes=False,  # no mode (executable bit) over REST
        max_batch_ops=MAX_OPS,
    )

    def __init__(
        self,
        repo_id: str,
        *,
        token: str,
        endpoint: str = DEFAULT_URL,
        snapshot_ttl: float = SNAPSHOT_TTL,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.repo_id = repo_id
        self.base_url = endpoint.rstrip("/")
        self.snapshot_ttl = snapshot_ttl
        self._http = HttpClient(
            self.base_url,
            token=token,
            name=f"relace {self.base_url}",
            retry=retry,
            transport=transport,
        )
        self._repo_url = f"{self.base_url}/repo/{quote(repo_id, safe='')}"
        self._snapshot: Snapshot | None = None
        self._snapshot_lock = trio.Lock()
        self._writes = 0  # bumped by every write: a clone begun before one is not kept

    @property
    def identity(self) -> str:
        return f"relace:{self.base_url}/{self.repo_id}"

    async def aclose(self) -> None:
        await self._http.aclose()

    def version_of(self, sha256: str) -> str | None:
        return sha256  # a file's version is the SHA-256 of its bytes

    # ------------------------------------------------------------------ reading

    async def info(self) -> RepoInfo:
        try:
            data = json_object(await self._http.request("GET", self._repo_url))
        except NotFound as exc:
            raise NotFound(
                f"relace repo {self.repo_id!r} not found at {self.base_url}", status=exc.status
            ) from exc
        except Unauthorized as exc:
            raise Unauthorized(
                f"{self.base_url} rejected the API key for repo {self.repo_id!r} (check {KEY_ENV})",
                status=exc.status,
            ) from exc
        metadata = data.get("metadata") or {}
        name = metadata.get("name") if isinstance(metadata, dict) else None
        return RepoInfo(name=str(name or self.repo_id), head=None)  # GET has no repo_head

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        snapshot = await self._current_snapshot()
        entries = snapshot.listing(path, recursive=recursive)
        if entries is None:
            raise NotFound(f"{path!r} is not a directory in relace repo {self.repo_id!r}")
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
        end = None if length is None else offset + length
        if version is None:
            return await self._download(path, dest, offset, end)
        # The version is known only once every byte is in: keep them aside until then,
        # so that `dest` never receives the content of another version.
        with tempfile.TemporaryFile() as spool:
            fetched = await self._download(path, spool, offset, end)
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
        digest = hashlib.sha256()
        pos = written = 0
        async with self._http.stream("GET", self._file_url(path)) as response:
            async for chunk in response.aiter_bytes(CHUNK):
                digest.update(chunk)
                lo = max(start - pos, 0)
                hi = len(chunk) if end is None else min(end - pos, len(chunk))
                if lo < hi:
                    dest.write(chunk[lo:hi])
                    written += hi - lo
                pos += len(chunk)
        return Fetched(digest.hexdigest(), pos, written)

    async def _hash_file(self, path: str) -> tuple[str, int] | None:
        """(version, size) of the file at `path` now, or None when there is none."""
        digest = hashlib.sha256()
        size = 0
        try:
            async with self._http.stream("GET", self._file_url(path)) as response:
                async for chunk in response.aiter_bytes(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except NotFound:
            return None
        return digest.hexdigest(), size

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
        data = json_object(await self._http.request("GET", f"{self._repo_url}/clone"))
        files: dict[str, RemoteFile] = {}

        def parse() -> None:
            for item in data["files"]:
                path, content = str(item["filename"]), item["content"]
                try:
                    validate_path(path)
                except InvalidPathError:
                    log.warning("relace %s: skipping unusable path %r", self.repo_id, path)
                    continue
                raw = str(content).encode("utf-8", "surrogatepass")
                files[path] = RemoteFile(len(raw), hashlib.sha256(raw).hexdigest())

        _parse(parse)
        return Snapshot(files, taken=started)

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
            except RemoteError as error:
                failure = await self._explain(error)
                if not sent and _whole_request_failed(failure.error):
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
        for i, outcome in enumerate(outcomes):
            if outcome is None:
                outcomes[i] = Applied(checked.versions.get(i))
        return ApplyResult(head=head, outcomes=[o for o in outcomes if o is not None])

    async def _versions(self, paths: set[str]) -> dict[str, str | None]:
        """The version of the file at each path now (None: no file), downloaded and
        hashed: the only way Relace tells a file's content."""
        found: dict[str, str | None] = {}
        limit = trio.Semaphore(CHECKS_AT_ONCE)

        async def one(path: str) -> None:
            async with limit:
                result = await self._hash_file(path)
            found[path] = None if result is None else result[0]

        async with trio.open_nursery() as nursery:
            for path in sorted(paths):
                nursery.start_soon(one, path)
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
            operations = [_operation(op, texts) for op in request]
            body = {"source": {"type": "diff", "operations": operations}}
            response = await self._write("POST", f"{self._repo_url}/update", json=body)
        data = json_object(response)
        return _parse(lambda: str(data["repo_head"]))

    async def _write(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A write request, sent again while the repo answers 423 (locked by another
        operation: nothing was done, so it is safe whatever the method)."""
        retry = 0
        while True:
            try:
                return await self._http.request(method, url, idempotent=False, **kwargs)
            except Unavailable as error:
                policy = self._http.retry
                if error.status != 423 or retry + 1 >= policy.attempts:
                    raise
                delay = max(policy.backoff(retry), error.retry_after or 0.0)
                log.info("relace %s: repo busy (423), retrying in %.2fs", self.repo_id, delay)
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
        return f"{self._repo_url}/file/{quote(path, safe='/')}"


# --------------------------------------------------------------------------- opening


def open_relace(src: str, *, endpoint: str | None = None, token: str | None = None) -> Remote:
    """The adapter for `relace:REPO_ID`. The base URL is `endpoint`, else $RELACE_API_URL,
    else the service's; the key is `token`, else $RELACE_API_KEY. Raises ValueError with
    a one-line message when `src` (or the endpoint, or a missing key) is unusable."""
    src = src.strip()
    scheme, colon, repo_id = src.partition(":")
    if scheme.lower() != "relace" or not colon:
        raise ValueError(f"bad remote {src!r}: expected {ACCEPTED}")
    if repo_id.startswith("//"):
        raise ValueError(f"bad remote {src!r}: no '//' after 'relace:' (expected {ACCEPTED})")
    if not repo_id:
        raise ValueError(f"bad remote {src!r}: no repo id after 'relace:'")
    if not REPO_ID_RE.fullmatch(repo_id):
        raise ValueError(
            f"bad remote {src!r}: a repo id is letters, digits, '.', '_' and '-' "
            f"(a UUID such as 0b4a2c9e-...; expected {ACCEPTED})"
        )
    url = (endpoint or os.environ.get(URL_ENV) or DEFAULT_URL).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad Relace endpoint {url!r}: expected http(s)://HOST[:PORT]/PATH")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"bad Relace endpoint: put the key in {KEY_ENV}, not in the URL")
    if parts.query or parts.fragment:
        raise ValueError(f"bad Relace endpoint {url!r}: no query or fragment allowed")
    key = token or os.environ.get(KEY_ENV)
    if not key:
        raise ValueError(f"{src} needs a Relace API key: set {KEY_ENV}")
    return RelaceRemote(repo_id, token=key, endpoint=url)


# --------------------------------------------------------------------------- module helpers


def _whole_request_failed(error: RemoteError) -> bool:
    """Errors that say nothing about single changes: unreachable, refused key, no repo
    (a NotFound from `_explain` is the repo's: a missing path becomes Aborted)."""
    return isinstance(error, Unauthorized | Unavailable | NotFound)


def _operation(op: WireOp, texts: dict[int, str]) -> dict[str, str]:
    if isinstance(op, WireWrite):
        return {"type": "write", "filename": op.change.path, "content": texts[op.index]}
    if isinstance(op, WireDelete):
        return {"type": "delete", "filename": op.path}
    return {"type": "rename", "old_filename": op.src, "new_filename": op.dst}


def _parse(build: Callable[[], T]) -> T:
    return parse_answer(build, "Relace")
