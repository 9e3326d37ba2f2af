"""The adapter for Terminal Use filesystems (SRC `terminaluse:FILESYSTEM_ID`).

Wire contract: ../shared/reference/remote-terminaluse.md; the semantics chosen here are
in docs/remotes.md ("Terminal Use"). In short:
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
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import trio

from repomount.remotes.base import (
    Aborted,
    Applied,
    ApplyResult,
    Capabilities,
    Change,
    Conflict,
    Conflicted,
    Delete,
    Entry,
    Expect,
    ExpectT,
    Failed,
    Fetched,
    Listing,
    Mkdir,
    NotFound,
    Outcome,
    PreconditionRequired,
    ProtocolError,
    Remote,
    RemoteError,
    Rename,
    RepoInfo,
    Unauthorized,
    Unavailable,
    Unsupported,
    Write,
)
from repomount.remotes.http import (
    DEFAULT_RETRY,
    HttpClient,
    RetryPolicy,
    file_chunks,
    json_object,
    parse_answer,
)

log = logging.getLogger(__name__)

DEFAULT_URL = "https://api.terminaluse.com"
URL_ENV = "TERMINALUSE_API_URL"
KEY_ENV = "TERMINALUSE_API_KEY"
ACCEPTED = "terminaluse:FILESYSTEM_ID"
FS_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")

PAGE = 5000  # the API's largest `limit`
CHUNK = 256 * 1024
BASE_REFRESHES = 5  # 409 -> fresh base -> upload again, at most this often per write
LIST_ATTEMPTS = 3  # listings whose archive version moved meanwhile are redone
KEYS_KEPT = 4096  # idempotency keys whose first baseVersion we remember

T = TypeVar("T")

# Whole-request failures: the next change would fail the same way.
_FATAL = (Unavailable, Unauthorized, NotFound)


class TerminalUseRemote(Remote):
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

    def __init__(
        self,
        filesystem_id: str,
        *,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        page_size: int = PAGE,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.filesystem_id = filesystem_id
        self.page_size = page_size
        self._http = HttpClient(
            self.base_url,
            token=token,
            name=f"terminaluse {self.base_url} {filesystem_id}",
            retry=retry,
            transport=transport,
        )
        self._fs_url = f"/filesystems/{quote(filesystem_id, safe='')}"
        # The latest archive version seen, as the service wrote it ("" = no archive yet).
        self._base: str | None = None
        # The baseVersion each key was first sent with: a retry must be the same request.
        self._key_base: OrderedDict[str, str] = OrderedDict()
        # Uploads one at a time: each answer carries the base of the next one, where
        # parallel uploads would mostly make each other's base stale (409).
        self._upload_lock = trio.Lock()

    @property
    def identity(self) -> str:
        return f"terminaluse:{self.base_url}/{self.filesystem_id}"

    async def aclose(self) -> None:
        await self._http.aclose()

    def version_of(self, sha256: str) -> str | None:
        return sha256  # file_version is the SHA-256 of the content

    # ------------------------------------------------------------------ reading

    async def info(self) -> RepoInfo:
        where = f"{self.base_url}"
        try:
            head = await self._refresh_base()
        except NotFound as exc:
            raise NotFound(
                f"filesystem {self.filesystem_id!r} not found on {where} "
                "(or the API key may not access it)",
                status=exc.status,
            ) from exc
        except Unauthorized as exc:
            hint = (
                f"it requires an API key: set {KEY_ENV}"
                if not self._http.has_token
                else f"it rejected the API key (check {KEY_ENV})"
            )
            raise Unauthorized(f"not authorized by {where}: {hint}", status=exc.status) from exc
        except Unavailable as exc:
            raise Unavailable(
                f"cannot reach {where}: {exc.message}",
                status=exc.status,
                retry_after=exc.retry_after,
            ) from exc
        return RepoInfo(name=self.filesystem_id, head=_norm(head) or None)

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        # The listing is paged by offset and carries no version: it is one snapshot only
        # when the archive version is the same before and after it.
        for _ in range(LIST_ATTEMPTS):
            before = await self._refresh_base()
            files = await self._files_below(path)
            after = await self._refresh_base()
            if _norm(before) == _norm(after):
                break
        else:
            raise Unavailable(f"{self.identity} kept changing while it was being listed")
        entries = _tree(path, files, recursive=recursive)
        if path and not entries:
            raise NotFound(f"{path!r} is not a directory in {self.identity}")
        return Listing(path=path, head=_norm(before) or None, entries=entries, recursive=recursive)

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
                    "GET", f"{self._fs_url}/files", params={**params, "offset": offset}
                )
            )
            page, total = _parse(partial(_page, data))
            found += [e for e in page if _below(e.path, path)]  # `directory` may be a prefix
            offset += len(page)
            if not page or offset >= total:
                return found

    async def stat(self, path: str) -> Entry | None:
        if not path:
            return Entry(path="", kind="dir")
        url = f"{self._fs_url}/files/{quote(path, safe='/')}"
        try:
            data = json_object(
                await self._http.request("GET", url, params={"include_content": "false"})
            )
        except NotFound:
            pass
        else:
            return _parse(lambda: _entry(data))
        # Directories are implicit: one exists while a file lives below it.
        files = await self._http.request(
            "GET",
            f"{self._fs_url}/files",
            params={"directory": path, "include_content": "false", "limit": 100},
        )
        listed = _parse(lambda: [str(f["path"]).lstrip("/") for f in json_object(files)["files"]])
        if any(_below(p, path) and p != path for p in listed):
            return Entry(path=path, kind="dir")
        return None

    async def read(
        self,
        path: str,
        dest: BinaryIO,
        *,
        version: str | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> Fetched:
        """The whole file is downloaded (and hashed: its hash is its version); the asked-for
        slice is written. With `version`, a mismatch raises Conflict after the bytes are
        written, so `dest` then holds the current content."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        digest = hashlib.sha256()
        end = None if length is None else offset + length
        pos = written = 0
        url = f"{self._fs_url}/file-download"
        async with self._http.stream("GET", url, params={"path": path}) as response:
            async for chunk in response.aiter_bytes(CHUNK):
                digest.update(chunk)
                lo = max(offset - pos, 0)
                hi = len(chunk) if end is None else min(end - pos, len(chunk))
                if lo < hi:
                    dest.write(chunk[lo:hi])
                    written += hi - lo
                pos += len(chunk)
        current = digest.hexdigest()
        if version is not None and _norm(version) != current:
            raise Conflict(
                f"{path!r} in {self.identity} is at version {current}, not {version}",
                current=current,
            )
        return Fetched(current, pos, written)

    # ------------------------------------------------------------------ writing

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        if self._base is None and base is not None:
            self._base = base
        outcomes: list[Outcome] = []
        for index, change in enumerate(changes):
            try:
                outcomes.append(await self._apply_one(change))
            except _FATAL as error:
                if not outcomes:
                    raise  # nothing was applied: the request as a whole failed
                rest = len(changes) - index - 1
                outcomes.append(Failed(error))
                outcomes += [Failed(Aborted(f"not sent after: {error.message}"))] * rest
                break
            except RemoteError as error:
                outcomes.append(Failed(error))
        return ApplyResult(head=_norm(self._base or "") or None, outcomes=outcomes)

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
            self._base, version = _parse(partial(_uploaded, data))
            return Applied(version=version)
        return Failed(Unavailable(f"{self.identity} kept changing; the upload will be retried"))

    async def _after_409(self, change: Write, sent: str, exc: Conflict) -> Outcome | None:
        """What a 409 (stale base or reused key) means for this write: an outcome, or
        None to upload again on the refreshed base."""
        fresh = await self._refresh_base()
        current = await self._version_at(change.path)
        if current is not None and current == change.sha256:
            return Conflicted(current)  # our content is there: the vfs knows it (version_of)
        if not _expected(change.expect, current):
            return Conflicted(current)
        if change.expect is Expect.ANY or _norm(fresh) == _norm(sent):
            # Not a stale base: the Idempotency-Key was used for another request.
            log.error("%s: upload of %r refused: %s", self, change.path, exc.message)
            return Failed(ProtocolError(f"{exc.message} (Idempotency-Key {change.key!r})"))
        self._remember(change.key, fresh)
        return None

    async def _upload(self, change: Write, base: str) -> httpx.Response:
        params: dict[str, str | int] = {"path": change.path}
        if change.expect is not Expect.ANY:
            params.update(writeMode="conditional", baseVersion=base)
            if change.expect is Expect.ABSENT:
                params["createOnly"] = "*"
            else:
                assert isinstance(change.expect, str)
                params["expectedVersion"] = change.expect
        params["digest"] = "sha-256=" + base64.b64encode(bytes.fromhex(change.sha256)).decode()
        size = (await trio.Path(change.source).stat()).st_size
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if change.key:
            headers["Idempotency-Key"] = change.key
        return await self._http.request(
            "PUT",
            f"{self._fs_url}/file-upload",
            params=params,
            headers=headers,
            content=file_chunks(change.source),
            # A resend replays (same key) or fails its precondition: never writes twice.
            idempotent=True,
        )

    # ------------------------------------------------------------------ helpers

    async def _refresh_base(self) -> str:
        """The filesystem's archive version now ("" while it has none), remembered."""
        data = json_object(await self._http.request("GET", self._fs_url))
        checksum = _parse(lambda: data["archive_checksum"])
        self._base = "" if checksum is None else str(checksum)
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


def open_terminaluse(src: str, *, endpoint: str | None = None, token: str | None = None) -> Remote:
    """The adapter for `terminaluse:FILESYSTEM_ID`. The API's base URL is `endpoint`,
    else $TERMINALUSE_API_URL, else https://api.terminaluse.com; the key is `token`,
    else $TERMINALUSE_API_KEY. Raises ValueError with a one-line message."""
    scheme, sep, fs_id = src.strip().partition(":")
    if scheme.lower() != "terminaluse" or not sep:
        raise ValueError(f"bad remote {src!r}: expected {ACCEPTED}")
    if not fs_id:
        raise ValueError(f"bad remote {src!r}: no filesystem id after 'terminaluse:'")
    if not FS_ID_RE.fullmatch(fs_id):
        raise ValueError(
            f"bad remote {src!r}: a filesystem id is letters, digits, '.', '_' and '-' "
            f"(expected {ACCEPTED})"
        )
    base_url = _base_url(endpoint or os.environ.get(URL_ENV) or DEFAULT_URL)
    if token is None:
        token = os.environ.get(KEY_ENV) or None
    if not token:
        raise ValueError(f"no Terminal Use API key: set {KEY_ENV}")
    return TerminalUseRemote(fs_id, base_url=base_url, token=token)


def _base_url(url: str) -> str:
    parts = urlsplit(url.strip())
    shown = url if "@" not in parts.netloc else "the URL given"  # may hold a secret

    def bad(why: str) -> ValueError:
        return ValueError(f"bad Terminal Use API URL {shown!r}: {why}")

    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad("expected http(s)://HOST[:PORT][/PATH]")
    if parts.username is not None or parts.password is not None:
        raise bad(f"put the key in {KEY_ENV}, not in the URL")
    if parts.query or parts.fragment:
        raise bad("no query or fragment allowed")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise bad("the port is not a number from 0 to 65535") from None
    return url.strip().rstrip("/")


# --------------------------------------------------------------------------- module helpers


def _norm(token: str) -> str:
    """Versions compare without an optional `sha256:` prefix, case-insensitively."""
    return token.strip().lower().removeprefix("sha256:")


def _expected(expect: ExpectT, current: str | None) -> bool:
    if expect is Expect.ANY:
        return True
    if expect is Expect.ABSENT:
        return current is None
    assert isinstance(expect, str)
    return current is not None and current == _norm(expect)


def _below(path: str, directory: str) -> bool:
    return not directory or path == directory or path.startswith(directory + "/")


def _entry(data: dict[str, Any]) -> Entry:
    path = str(data["path"]).lstrip("/")
    modified = data.get("modified_at")
    mtime = None if not modified else _timestamp(str(modified))
    if data.get("is_directory"):
        return Entry(path=path, kind="dir", mtime=mtime)
    checksum = data.get("checksum")
    return Entry(
        path=path,
        kind="file",
        size=int(data.get("size_bytes") or 0),
        version=None if checksum is None else _norm(str(checksum)),
        mtime=mtime,
    )


def _page(data: dict[str, Any]) -> tuple[list[Entry], int]:
    return [_entry(f) for f in data["files"]], int(data["total_count"])


def _uploaded(data: dict[str, Any]) -> tuple[str, str]:
    """(the new archive version as sent, the file's new version) of an upload answer."""
    return str(data["archive_version"]), _norm(str(data["file_version"]))


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _tree(path: str, listed: list[Entry], *, recursive: bool) -> list[Entry]:
    """The entries below `path` (all, or its children), with the directories that the
    files' paths imply, sorted by path."""
    found: dict[str, Entry] = {}
    depth = len(path.split("/")) if path else 0
    for entry in listed:
        if entry.path == path:
            continue
        parts = entry.path.split("/")
        for i in range(depth + 1, len(parts)):
            ancestor = "/".join(parts[:i])
            found.setdefault(ancestor, Entry(path=ancestor, kind="dir"))
        if entry.kind == "dir":
            found.setdefault(entry.path, entry)
        else:
            found[entry.path] = entry
    entries = sorted(found.values(), key=lambda e: e.path)
    if recursive:
        return entries
    prefix = f"{path}/" if path else ""
    return [e for e in entries if "/" not in e.path[len(prefix) :]]


def _parse(build: Callable[[], T]) -> T:
    return parse_answer(build, "Terminal Use")
