"""The storage interface behind every HTTP face of the reference server.

The HTTP layer only talks to `Store`, so a multi-user server can later keep metadata in
PostgreSQL and blobs in an object store without touching the routes. Methods are
synchronous and thread-safe; the HTTP layer calls them from worker threads so that disk
and database work never blocks the event loop.

Versions are content hashes (lowercase hex SHA-256); heads are commit sequence numbers.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

# `expect` values besides a version: the path must not exist / must exist (any version).
ABSENT = "absent"
PRESENT = "*"

EntryType = Literal["file", "dir", "symlink"]
ChangeOp = Literal["write", "delete", "mkdir"]

DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
SYMLINK_MODE = 0o777
MAX_SYMLINK_TARGET = 4096  # bytes of UTF-8, as PATH_MAX
WRITE_OUT_EVERY = 8 << 20  # bytes of a spool on disk between two starts of its writing


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def symlink_version(target: str) -> str:
    """A symlink's version: the SHA-256 of its target's UTF-8 bytes (its "content")."""
    return sha256_hex(target.encode("utf-8"))


# --- data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoInfo:
    name: str
    head: int
    created_at: str  # ISO 8601 UTC
    file_count: int = 0
    bytes: int = 0
    updated_at: str | None = None  # ISO 8601 UTC of the head commit; None before the first


@dataclass(frozen=True)
class CommitInfo:
    """What a commit recorded besides its changes."""

    seq: int  # the head it made
    time: float  # seconds since the epoch
    message: str
    author: str


@dataclass(frozen=True)
class Entry:
    path: str
    type: EntryType
    size: int
    version: str | None  # the blob's SHA-256 for files, None for directories
    mtime_ns: int  # nanoseconds since the epoch: as a write set it, else its commit's time
    mode: int
    target: str | None = None  # symlinks only: where it points (its version hashes this)

    @property
    def mtime(self) -> float:
        """Seconds since the epoch (exact only to about a microsecond: see mtime_ns)."""
        return self.mtime_ns / 1e9


@dataclass(frozen=True)
class Listing:
    head: int
    entries: list[Entry]
    more: bool  # another page follows the last entry


@dataclass(frozen=True)
class JsonPage:
    """A Listing page already written as the native tree answer's JSON."""

    head: int
    entries: str  # a JSON array, in path order
    last: str | None  # the last entry's path (None: no entry)
    more: bool  # another page follows `last`


@dataclass(frozen=True)
class Change:
    head: int
    path: str
    op: ChangeOp
    version: str | None


@dataclass(frozen=True)
class ChangeSet:
    head: int  # the newest commit whose changes are all included
    changes: list[Change]


# Operations of a commit. `expect` is None (no check), ABSENT, PRESENT or a version.
@dataclass(frozen=True)
class Write:
    path: str
    blob: str
    expect: str | None = None
    mode: int | None = None  # None: keep the mode of a replaced file, else the default
    mtime_ns: int | None = None  # None: the time of the commit


@dataclass(frozen=True)
class Delete:
    path: str
    expect: str | None = None


@dataclass(frozen=True)
class Rename:
    src: str
    dst: str
    expect: str | None = None
    expect_to: str | None = None


@dataclass(frozen=True)
class Mkdir:
    path: str


@dataclass(frozen=True)
class Symlink:
    """Create or replace (per `expect`, as Write) a symbolic link. The target is data:
    never resolved, relative or absolute; see `check_symlink_target` for what is valid."""

    path: str
    target: str
    expect: str | None = None


Operation = Write | Delete | Rename | Mkdir | Symlink


@dataclass(frozen=True)
class OpResult:
    path: str
    version: str | None
    created: bool  # the path did not exist before this operation


@dataclass(frozen=True)
class CommitResult:
    head: int
    results: list[OpResult]
    replayed: bool = False  # answered from the idempotency record of an earlier request


@dataclass(frozen=True)
class GcReport:
    """What one garbage collection pass did (see server/gc.py)."""

    freed: int = 0  # blobs removed
    freed_bytes: int = 0
    kept: int = 0  # blobs left (referenced, or uploaded within the grace period)
    kept_bytes: int = 0


@dataclass(frozen=True)
class Idempotency:
    key: str
    fingerprint: str  # hash of everything that makes two requests "the same"


# --- errors ------------------------------------------------------------------------------


class StoreError(Exception):
    """A refusal with a stable machine-readable code (the HTTP layer maps codes to status)."""

    code = "store_error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(StoreError):
    code = "not_found"


class RepoExists(StoreError):
    code = "repo_exists"


class Gone(StoreError):
    code = "gone"


class InvalidRequest(StoreError):
    code = "invalid_request"


def check_symlink_target(target: object) -> bytes:
    """The target's UTF-8 bytes; InvalidRequest unless it is a string of 1 to
    MAX_SYMLINK_TARGET bytes of valid UTF-8 without NUL."""
    if not isinstance(target, str):
        raise InvalidRequest("a symlink target must be a string")
    try:
        data = target.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("a symlink target must be valid UTF-8") from None
    if not data:
        raise InvalidRequest("a symlink target must not be empty")
    if len(data) > MAX_SYMLINK_TARGET:
        raise InvalidRequest(
            f"a symlink target is at most {MAX_SYMLINK_TARGET} bytes, not {len(data)}"
        )
    if b"\0" in data:
        raise InvalidRequest("a symlink target must not contain NUL")
    return data


class InvalidPath(StoreError):
    """A path that breaks repomount.paths' rules (422), e.g. one a rename would make."""

    code = "invalid_path"


class UnknownBlob(StoreError):
    code = "unknown_blob"


class PathConflict(StoreError):
    code = "path_conflict"


class DirectoryNotEmpty(StoreError):
    code = "directory_not_empty"


class IdempotencyConflict(StoreError):
    code = "idempotency_conflict"


class StaleBase(StoreError):
    """The repository's head is not the `base` a commit was made against."""

    code = "stale_base"


@dataclass(frozen=True)
class PreconditionFailure:
    index: int
    path: str
    expected: str
    current: str | None


class Conflict(StoreError):
    """One or more operations' preconditions failed; nothing was applied."""

    code = "conflict"

    def __init__(self, conflicts: list[PreconditionFailure]) -> None:
        paths = ", ".join(c.path for c in conflicts[:5])
        super().__init__(
            f"precondition failed for {len(conflicts)} operation(s): {paths}",
            conflicts=[dataclasses.asdict(c) for c in conflicts],
        )
        self.conflicts = conflicts


# --- the interface -----------------------------------------------------------------------


@dataclass
class BlobSpool:
    """A temporary file being filled with an upload; `Store.add_blob` moves it in."""

    name: str  # the file's path (a string: a Path costs more to build than the blob)
    file: BinaryIO
    size: int = 0
    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)
    # A spool on disk has the disk start writing its bytes as they come (fd, offset,
    # length; writeout.py), so the fsync that makes it durable finds little left.
    write_out: Callable[[int, int, int], None] | None = None
    _written_out: int = 0

    @property
    def path(self) -> Path:
        return Path(self.name)

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)
        if self.write_out is not None and self.size - self._written_out >= WRITE_OUT_EVERY:
            self.file.flush()
            self.write_out(self.file.fileno(), self._written_out, self.size - self._written_out)
            self._written_out = self.size

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        """Flush the content to the file and close it (again: nothing): a closed spool
        holds no descriptor and no buffer while it waits to be moved in."""
        self.file.close()

    def held_content(self) -> bytes | None:
        """The content, closed, when the spool holds it in memory (a small one): it can
        then go with the commit that names it (`Store.commit`'s `contents`), one
        transaction instead of `add_blob`'s and the commit's. None for a file."""
        return None


class Store(abc.ABC):
    """Repositories of versioned files with atomic multi-operation commits."""

    # repositories
    @abc.abstractmethod
    def list_repos(self) -> list[RepoInfo]: ...

    @abc.abstractmethod
    def create_repo(self, name: str) -> RepoInfo:
        """Raises RepoExists. A name deleted before counts its heads on from the deleted
        repo's last head (plus one), never from 0 again: a client's position in the old
        one must not be taken for one in the new one."""

    @abc.abstractmethod
    def repo_info(self, name: str) -> RepoInfo:
        """With file_count and bytes. Raises NotFound."""

    @abc.abstractmethod
    def delete_repo(self, name: str) -> None:
        """Raises NotFound."""

    # Small string attributes that faces keep per repository (Relace's metadata, say),
    # under keys prefixed by the face's name. They go when the repository goes.
    @abc.abstractmethod
    def repo_attrs(self, name: str) -> dict[str, str]:
        """All attributes of a repository ({} when none). Raises NotFound."""

    @abc.abstractmethod
    def set_repo_attrs(self, name: str, attrs: Mapping[str, str | None]) -> None:
        """Set these attributes at once (None removes one). Raises NotFound."""

    # reads; `at` None means the current head. Raise NotFound / Gone.
    @abc.abstractmethod
    def head(self, repo: str) -> int: ...

    @abc.abstractmethod
    def stat(self, repo: str, path: str, at: int | None = None) -> tuple[int, Entry | None]:
        """The entry at `path` (None when absent) and the head it was read at."""

    @abc.abstractmethod
    def stat_many(
        self, repo: str, paths: Sequence[str], at: int | None = None
    ) -> tuple[int, list[Entry | None]]:
        """Like stat for many paths, all read at one head."""

    @abc.abstractmethod
    def list_tree(
        self,
        repo: str,
        path: str,
        *,
        recursive: bool,
        at: int | None,
        after: str | None,
        limit: int,
    ) -> Listing:
        """Entries below directory `path` ("" is the root) sorted by path, those after
        `after`, at most `limit`. NotFound when `path` is not a directory."""

    @abc.abstractmethod
    def list_tree_json(
        self,
        repo: str,
        path: str,
        *,
        recursive: bool,
        at: int | None,
        after: str | None,
        limit: int,
    ) -> JsonPage:
        """`list_tree`, its entries already in the native tree answer's JSON (a page
        of thousands is the one answer a client waits on while it mounts)."""

    @abc.abstractmethod
    def changes(self, repo: str, since: int, limit: int) -> ChangeSet:
        """Changes of the commits after `since`, oldest first, whole commits only (at
        least one commit even when it alone exceeds `limit`). Gone when `since` is older
        than the kept history or newer than the head."""

    @abc.abstractmethod
    def commit_log(self, repo: str, upto: int | None, limit: int) -> list[CommitInfo]:
        """The kept commits up to head `upto` (the current head by default), newest
        first, at most `limit`. NotFound when `upto` is beyond the head."""

    # blobs, shared by all repositories
    @abc.abstractmethod
    def new_spool(self, size: int | None = None) -> BlobSpool:
        """An empty spool; `size`, when the content's length is known, lets it buffer
        no more than that."""

    @abc.abstractmethod
    def discard_spool(self, spool: BlobSpool) -> None: ...

    @abc.abstractmethod
    def add_blobs(self, spools: Sequence[BlobSpool]) -> list[bool]:
        """Make each spool's content durable under its hash; True for each new blob.
        The spools (open, or closed once filled) are consumed (moved in or deleted)."""

    def add_blob(self, spool: BlobSpool) -> bool:
        return self.add_blobs([spool])[0]

    @abc.abstractmethod
    def has_blob(self, sha256: str) -> bool:
        """Whether the blob is stored; one found counts as uploaded again now (it is kept
        for the garbage collector's grace period, for the commit that will name it)."""

    @abc.abstractmethod
    def collect_garbage(self, grace: float) -> GcReport:
        """Remove the blobs no kept history references that were last uploaded more than
        `grace` seconds ago (see server/gc.py)."""

    @abc.abstractmethod
    def open_blob(self, sha256: str) -> BinaryIO:
        """Raises NotFound."""

    # writes
    @abc.abstractmethod
    def commit(
        self,
        repo: str,
        operations: Sequence[Operation],
        *,
        message: str = "",
        author: str = "",
        idempotency: Idempotency | None = None,
        base: int | None = None,
        contents: Mapping[str, bytes] | None = None,
    ) -> CommitResult:
        """Apply the operations in order, all or none. With `base`, the head must still
        be `base` (checked after an idempotent replay, before the preconditions).
        `contents`: blobs the operations name that came with the request, by their
        SHA-256, stored first (where the store can, in the commit's own transaction).
        Raises
        Conflict (every failed precondition), PathConflict, DirectoryNotEmpty, NotFound,
        UnknownBlob, InvalidRequest (also a bad symlink target), IdempotencyConflict,
        StaleBase.

        Symlinks are entries of their own type, never followed: a Symlink creates or
        replaces one (a directory there is a PathConflict); a Write over one replaces it
        with a file; Delete and Rename treat one as a file (the moved entry stays a
        link); an `expect` compares with its version (`symlink_version`)."""

    @abc.abstractmethod
    def close(self) -> None: ...
