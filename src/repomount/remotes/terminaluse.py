"""The adapter for Terminal Use filesystems (SRC `terminaluse:FILESYSTEM_ID`).

The wire contract and the semantics chosen here are in docs/remotes.md ("Terminal Use").
In short:
- listing is `GET /filesystems/{id}/files` (recursive, paged); directories are implicit
  in file paths, and a file's version is its manifest checksum, the SHA-256 of its
  content (kept as bare lowercase hex: uploads answer `file_version` that way, while
  manifests say `sha256:<hex>`).
- every write is one `file-upload`: conditional (`baseVersion` = the latest archive
  version we know, `expectedVersion` or `createOnly=*`) unless the change expects ANY,
  always with `digest` and the change's key as `Idempotency-Key`. A 409 means the
  filesystem moved (any file) or the key was reused: if the file itself is unchanged
  the upload is sent again on the fresh base; 412 is a real conflict on the file.
- the API has no single-file delete, rename or mkdir. The only way is the archive
  upload + sync-complete, which is unconditional (last writer wins): a write landing
  between our last check and the sync would be silently reverted, and no check after
  it can tell. Those changes are therefore refused with Unsupported (never pretended).

terminaluse_wire.py parses the answers and builds the upload queries.
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import BinaryIO, Unpack

import httpx
import trio

from repomount.remotes.answers import json_object
from repomount.remotes.base import (
    Applied,
    ApplyResult,
    Capabilities,
    Change,
    Conflict,
    Conflicted,
    Delete,
    Entry,
    Expect,
    Failed,
    Fetched,
    Listing,
    Mkdir,
    NotFound,
    Outcome,
    PreconditionRequired,
    ProtocolError,
    Rename,
    RepoInfo,
    Symlink,
    Unauthorized,
    Unavailable,
    Unsupported,
    Write,
)
from repomount.remotes.endpoint import checked_url
from repomount.remotes.http import file_chunks
from repomount.remotes.httpremote import (
    HostedSource,
    HttpOptions,
    HttpRemote,
    apply_each,
    copy_body,
)
from repomount.remotes.limits import DEFAULT_TIMEOUTS, MAX_LISTING_ENTRIES, Timeouts
from repomount.remotes.terminaluse_wire import (
    archive_version,
    below,
    expected,
    file_entry,
    listed_paths,
    norm,
    page,
    tree,
    upload_headers,
    upload_params,
    uploaded,
)

log = logging.getLogger(__name__)

DEFAULT_URL = "https://api.terminaluse.com"

PAGE = 5000  # the API's largest `limit`
BASE_REFRESHES = 5  # 409 -> fresh base -> upload again, at most this often per write
LIST_ATTEMPTS = 3  # listings whose archive version moved meanwhile are redone
KEYS_KEPT = 4096  # idempotency keys whose first baseVersion we remember


class TerminalUseRemote(HttpRemote):
    capabilities = Capabilities(
        conditional_write=True,  # expectedVersion / createOnly=* are checked by the server
        atomic_batch=False,  # one upload per file; nothing commits several together
        rename=False,  # refused: only an unconditional whole-archive sync could do it
        delete=False,  # same
        empty_dirs=False,  # directories exist only as prefixes of file paths
        ranged_read=False,  # file-download has no documented Range support
        change_feed=False,
        binary_content=True,
        recursive_listing=True,  # GET .../files lists the whole tree (paged)
        max_batch_ops=1,  # every change is its own request anyway
    )
    scheme = "terminaluse"
    label = "terminaluse {base_url} {repo}"
    root = "/filesystems/{repo}"

    def __init__(
        self,
        filesystem_id: str,
        *,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        page_size: int = PAGE,
        **http: Unpack[HttpOptions],
    ) -> None:
        super().__init__(base_url, filesystem_id, token=token, **http)
        self.page_size = page_size
        # The latest archive version seen, as the service wrote it ("" = no archive yet).
        self._base: str | None = None
        # The baseVersion each key was first sent with: a retry must be the same request.
        self._key_base: OrderedDict[str, str] = OrderedDict()
        # Uploads one at a time: each answer carries the base of the next one, where
        # parallel uploads would mostly make each other's base stale (409).
        self._upload_lock = trio.Lock()

    # ------------------------------------------------------------------ reading

    async def _info(self) -> RepoInfo:
        return RepoInfo(name=self.repo, head=norm(await self._refresh_base()) or None)

    def _info_not_found(self) -> str:
        return (
            f"filesystem {self.repo!r} not found on {self.base_url} "
            "(or the API key may not access it)"
        )

    def _info_unauthorized(self, exc: Unauthorized) -> str:
        hint = (
            f"it requires an API key: set {KEY_ENV}"
            if not self._http.has_token
            else f"it rejected the API key (check {KEY_ENV})"
        )
        return f"not authorized by {self.base_url}: {hint}"

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        # The listing is paged by offset and carries no version: it is one snapshot only
        # when the archive version is the same before and after it.
        for _ in range(LIST_ATTEMPTS):
            before = await self._refresh_base()
            files = await self._files_below(path)
            after = await self._refresh_base()
            if norm(before) == norm(after):
                break
        else:
            raise Unavailable(f"{self.identity} kept changing while it was being listed", busy=True)
        entries = tree(path, files, recursive=recursive)
        if path and not entries:
            raise NotFound(f"{path!r} is not a directory in {self.identity}")
        return Listing(path=path, head=norm(before) or None, entries=entries, recursive=recursive)

    async def _files_below(self, path: str) -> list[Entry]:
        """Every entry the manifest lists at or below `path`, all pages."""
        params: dict[str, str | int] = {
            "recursive": "true",
            "include_content": "false",
            "limit": self.page_size,
        }
        if path:
            params["directory"] = path
        found: list[Entry] = []
        offset = 0
        while True:
            data = json_object(
                await self._http.request(
                    "GET", f"{self._root}/files", params={**params, "offset": offset}
                )
            )
            entries, held, total = page(data)
            found += [e for e in entries if below(e.path, path)]  # `directory` may be a prefix
            offset += held
            if not held or offset >= total:
                return found
            if offset > MAX_LISTING_ENTRIES:
                raise ProtocolError(f"listing of {path!r}: over {MAX_LISTING_ENTRIES} entries")

    async def stat(self, path: str) -> Entry | None:
        if not path:
            return Entry(path="", kind="dir")
        url = self._path_url("files", path)
        try:
            data = json_object(
                await self._http.request("GET", url, params={"include_content": "false"})
            )
        except NotFound:
            pass
        else:
            return file_entry(data)
        # Directories are implicit: one exists while a file lives below it.
        files = await self._http.request(
            "GET",
            f"{self._root}/files",
            params={"directory": path, "include_content": "false", "limit": 100},
        )
        listed = listed_paths(json_object(files))
        if any(below(p, path) and p != path for p in listed):
            return Entry(path=path, kind="dir")
        return None

    async def _fetch(
        self, path: str, dest: BinaryIO, version: str | None, start: int, end: int | None
    ) -> Fetched:
        """The whole file is downloaded (and hashed: its hash is its version); the asked-for
        slice is written. With `version`, a mismatch raises Conflict after the bytes are
        written, so `dest` then holds the current content."""
        url = f"{self._root}/file-download"
        async with self._http.stream("GET", url, params={"path": path}) as response:
            copied = await copy_body(response, dest, start=start, end=end)
        current = copied.sha256
        if version is not None and norm(version) != current:
            raise Conflict(
                f"{path!r} in {self.identity} is at version {current}, not {version}",
                current=current,
            )
        return Fetched(current, copied.size, copied.written)

    # ------------------------------------------------------------------ writing

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        if self._base is None and base is not None:
            self._base = base
        outcomes = await apply_each(changes, self._apply_one)
        return ApplyResult(head=norm(self._base or "") or None, outcomes=outcomes)

    async def _apply_one(self, change: Change) -> Outcome:
        if isinstance(change, Write):
            async with self._upload_lock:
                return await self._write(change)
        if isinstance(change, Delete):
            what = f"delete {change.path!r}"
        elif isinstance(change, Rename):
            what = f"rename {change.src!r} to {change.dst!r}"
        elif isinstance(change, Mkdir):
            message = (
                f"Terminal Use has no directories: {change.path!r} exists only once a file "
                "is written below it"
            )
            return Failed(Unsupported(message))
        elif isinstance(change, Symlink):
            return Failed(Unsupported(f"Terminal Use has no symlinks: {change.path!r}"))
        else:  # pragma: no cover - the Change union is closed
            raise TypeError(f"not a change: {change!r}")
        message = (
            f"Terminal Use cannot {what}: its API has no single-file delete or rename, and "
            "the whole-archive sync that could do it has no precondition (a concurrent "
            "write could be silently reverted)"
        )
        log.warning("%s: %s", self.identity, message)
        return Failed(Unsupported(message))

    async def _write(self, change: Write) -> Outcome:
        for _ in range(BASE_REFRESHES + 1):
            sent = self._key_base.get(change.key) if change.key else None
            if sent is None:
                sent = self._base if self._base is not None else await self._refresh_base()
                self._remember(change.key, sent)
            try:
                data = json_object(await self._upload(change, sent))
            except Conflict as exc:
                if exc.status == 412:  # the file is not at the expected version
                    return Conflicted(await self._version_at(change.path))
                outcome = await self._after_409(change, sent, exc)
                if outcome is not None:
                    return outcome
                continue  # the filesystem moved, the file did not: again on the new base
            except PreconditionRequired as exc:
                log.error("%s: the upload lacked its preconditions (a bug): %s", self, exc)
                return Failed(exc)
            self._base, version = uploaded(data)
            return Applied(version=version)
        return Failed(
            Unavailable(f"{self.identity} kept changing; the upload will be retried", busy=True)
        )

    async def _after_409(self, change: Write, sent: str, exc: Conflict) -> Outcome | None:
        """What a 409 (stale base or reused key) means for this write: an outcome, or
        None to upload again on the refreshed base."""
        fresh = await self._refresh_base()
        current = await self._version_at(change.path)
        if current is not None and current == change.sha256:
            return Conflicted(current)  # our content is there: the vfs knows it (version_of)
        if not expected(change.expect, current):
            return Conflicted(current)
        if change.expect is Expect.ANY or norm(fresh) == norm(sent):
            # Not a stale base: the Idempotency-Key was used for another request.
            log.error("%s: upload of %r refused: %s", self, change.path, exc.message)
            return Failed(ProtocolError(f"{exc.message} (Idempotency-Key {change.key!r})"))
        self._remember(change.key, fresh)
        return None

    async def _upload(self, change: Write, base: str) -> httpx.Response:
        params = upload_params(change, base)
        size = (await trio.Path(change.source).stat()).st_size
        return await self._http.request(
            "PUT",
            f"{self._root}/file-upload",
            params=params,
            headers=upload_headers(change, size),
            content=file_chunks(change.source),
            # A resend replays (same key) or fails its precondition: never writes twice.
            idempotent=True,
        )

    # ------------------------------------------------------------------ helpers

    async def _refresh_base(self) -> str:
        """The filesystem's archive version now ("" while it has none), remembered."""
        self._base = archive_version(json_object(await self._http.request("GET", self._root)))
        return self._base

    async def _version_at(self, path: str) -> str | None:
        entry = await self.stat(path)
        return entry.version if entry is not None and entry.kind == "file" else None

    def _remember(self, key: str, base: str) -> None:
        if not key:
            return
        self._key_base[key] = base
        self._key_base.move_to_end(key)
        while len(self._key_base) > KEYS_KEPT:
            self._key_base.popitem(last=False)


# --------------------------------------------------------------------------- opening


SOURCE = HostedSource(
    scheme="terminaluse",
    id_name="filesystem id",
    id_pattern=re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}"),
    default_url=DEFAULT_URL,
)
KEY_ENV = SOURCE.key_env


def open_terminaluse(
    src: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> TerminalUseRemote:
    """The adapter for `terminaluse:FILESYSTEM_ID`. The API's base URL is `endpoint`,
    else $TERMINALUSE_API_URL, else https://api.terminaluse.com; the key is `token`,
    else $TERMINALUSE_API_KEY. Raises ValueError with a one-line message."""
    fs_id = SOURCE.parse_id(src)
    base_url = _base_url(SOURCE.url(endpoint))
    if token is None:
        token = os.environ.get(KEY_ENV) or None
    if not token:
        raise ValueError(f"no Terminal Use API key: set {KEY_ENV}")
    return TerminalUseRemote(fs_id, base_url=base_url, token=token, timeouts=timeouts)


def _base_url(url: str) -> str:
    checked_url(url, what="Terminal Use API URL", secret_env=KEY_ENV)
    return url.strip().rstrip("/")
