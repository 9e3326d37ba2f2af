"""The one interface every remote adapter implements.

The vfs talks to remotes only through this module: capabilities are declared (the vfs
chooses a strategy from them, adapters never pretend), listings and changes are plain
data, and every failure crosses the boundary as one of the typed errors of
`remotes.errors` (re-exported here).

Version tokens are opaque strings chosen by each adapter (a content hash, a generation,
a file id); the vfs only compares them for equality and hands them back as `expect`.
"""

from __future__ import annotations

import abc
import enum
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, cast

import trio

# Re-exported (`X as X`): the errors and the download bound are importable from here too
from repomount.remotes.downloads import DOWNLOAD_SLACK as DOWNLOAD_SLACK
from repomount.remotes.downloads import Capped as Capped
from repomount.remotes.downloads import allowed as allowed
from repomount.remotes.downloads import too_long as too_long
from repomount.remotes.errors import Aborted as Aborted
from repomount.remotes.errors import Conflict as Conflict
from repomount.remotes.errors import Gone as Gone
from repomount.remotes.errors import InvalidPath as InvalidPath
from repomount.remotes.errors import NotFound as NotFound
from repomount.remotes.errors import PreconditionRequired as PreconditionRequired
from repomount.remotes.errors import ProtocolError as ProtocolError
from repomount.remotes.errors import RemoteError as RemoteError
from repomount.remotes.errors import TooLarge as TooLarge
from repomount.remotes.errors import Unauthorized as Unauthorized
from repomount.remotes.errors import Unavailable as Unavailable
from repomount.remotes.errors import Unsupported as Unsupported

# --------------------------------------------------------------------------- capabilities


# Seconds since the epoch a time may be: its nanoseconds must fit the kernel's 64 bits
# (with room to spare). A listed time outside is a bad entry; utimensat refuses one.
MIN_MTIME, MAX_MTIME = -(1 << 33), 1 << 33  # about 1698 to 2242


@dataclass(frozen=True)
class Capabilities:
    conditional_write: bool = False  # the server checks `expect` itself (If-Match & co.)
    atomic_batch: bool = False  # several changes commit together, all or none
    rename: bool = False  # a server-side rename exists (else: write + delete)
    delete: bool = False
    empty_dirs: bool = False  # a directory can exist with nothing in it
    ranged_read: bool = False  # part of a file can be fetched
    change_feed: bool = False  # `changes(since, wait)` long-polls instead of re-listing
    binary_content: bool = True  # arbitrary bytes round-trip unchanged
    recursive_listing: bool = False  # `list_tree("")` returns the whole repo in one go
    # A listing shows every file. False: some files are left out (Relace's clone: those
    # that are not UTF-8 text), so a file no listing ever showed is not gone when the
    # next listing leaves it out.
    complete_listing: bool = True
    # A listing of one directory costs that directory, not the whole tree filtered
    directory_listing: bool = False
    file_modes: bool = False  # a write's `mode` is kept (the executable bit survives)
    file_mtimes: bool = False  # a write's `mtime_ns` is kept, and listed back exactly
    symlinks: bool = False  # Symlink changes, and entries of kind "symlink" with a target
    # `stage()` uploads a content while it is still being written, before the change
    # that will name it (a Write with `staged`)
    staged_upload: bool = False
    # `upload_ahead()` stores finished contents before the changes that will name them
    # (Writes with `staged`): a burst of writes uploads while it goes on
    upload_ahead: bool = False
    max_batch_ops: int = 1000  # the most operations worth sending in one apply()


# --------------------------------------------------------------------------- versions


class Expect(enum.Enum):
    """Non-version preconditions. A plain `str` expect means "exactly that version"."""

    ABSENT = "absent"  # create only: the path must not exist
    ANY = "any"  # no precondition (used by the `mine` conflict policy)


ExpectT = str | Expect


def expect_met(expect: ExpectT, version: str | None) -> bool:
    """Whether a path whose current version is `version` (None: absent) meets `expect`:
    the check an adapter makes itself where the service has no precondition."""
    if expect is Expect.ANY:
        return True
    if expect is Expect.ABSENT:
        return version is None
    return version == expect


# --------------------------------------------------------------------------- listings

EntryKind = Literal["file", "dir", "symlink"]


@dataclass(frozen=True, slots=True)  # slots: a listing of a large repo holds 100,000
class Entry:
    path: str  # repo-relative, "/"-separated, no leading slash; "" is the root
    kind: EntryKind
    size: int = 0
    version: str | None = None  # None for directories and where the remote has none
    mtime: float | None = None  # seconds since the epoch
    mode: int | None = None  # permission bits, where the remote keeps them
    target: str | None = None  # for a symlink: where it points
    mtime_ns: int | None = None  # the exact time, where the remote keeps one (wins over mtime)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def time_ns(self) -> int | None:
        """The modification time in nanoseconds, as exact as the remote says it."""
        if self.mtime_ns is not None:
            return self.mtime_ns
        return None if self.mtime is None else round(self.mtime * 1e9)


@dataclass(frozen=True)
class Listing:
    """Entries below `path`, all seen at one `head` (the repo's version token)."""

    path: str
    head: str | None
    entries: list[Entry]
    recursive: bool = False


@dataclass(frozen=True)
class RepoInfo:
    name: str
    head: str | None
    # The largest content the remote takes, where it says (or documents) one: writes
    # and truncates past it are refused where they are made (EFBIG), not held later.
    max_file_size: int | None = None


@dataclass(frozen=True)
class RemoteChange:
    """One entry of a change feed: `path` changed (op write/mkdir) or went away (delete)."""

    path: str
    op: Literal["write", "delete", "mkdir"]
    version: str | None = None
    # The head of the commit that made it, where the feed says: tells our own commits
    # from others' when the version alone cannot (a new mode or mtime, same content)
    head: str | None = None


@dataclass(frozen=True)
class ChangeBatch:
    head: str | None
    changes: list[RemoteChange]


@dataclass(frozen=True)
class Fetched:
    """What a read delivered: the version it was at and how many bytes were written."""

    version: str | None
    size: int  # the whole file's size
    written: int
    # The whole file was written, and its bytes were found to be `version`'s (where
    # versions are content hashes): no second reading needed to check them.
    checked: bool = False


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class Write:
    path: str
    source: Path  # a local file holding the full new content (a spool file)
    size: int
    sha256: str  # hex digest of the content of `source`
    expect: ExpectT
    key: str = ""  # idempotency key, stable across retries of this change
    mode: int | None = None  # permission bits to record, where the remote keeps them
    mtime_ns: int | None = None  # the modification time to record, where it keeps them
    staged: bool = False  # the remote has this content already (`Remote.stage`): send none


@dataclass(frozen=True)
class Content:
    """A finished content to store ahead of its change (`Remote.upload_ahead`)."""

    sha256: str
    source: Path  # a local file holding exactly `size` bytes whose SHA-256 is `sha256`
    size: int


@dataclass(frozen=True)
class Delete:
    path: str
    expect: ExpectT = Expect.ANY
    key: str = ""


@dataclass(frozen=True)
class Rename:
    src: str
    dst: str
    expect: ExpectT = Expect.ANY  # the version of `src`
    key: str = ""
    expect_to: ExpectT = Expect.ANY  # what `dst` must be: a version, ABSENT, or ANY


@dataclass(frozen=True)
class Mkdir:
    path: str
    key: str = ""


@dataclass(frozen=True)
class Symlink:
    """Create (or replace, per `expect`) a symbolic link at `path` pointing to `target`.
    Its version is the remote's version of the link (native: SHA-256 of the target)."""

    path: str
    target: str
    expect: ExpectT = Expect.ABSENT
    key: str = ""


Change = Write | Delete | Rename | Mkdir | Symlink


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Applied:
    version: str | None = None  # the new version of the path written (None for deletes)


@dataclass(frozen=True)
class Conflicted:
    current: str | None  # the remote's version now (None: the path does not exist)


@dataclass(frozen=True)
class Failed:
    error: RemoteError

    @property
    def retryable(self) -> bool:
        return self.error.retryable


Outcome = Applied | Conflicted | Failed


@dataclass(frozen=True)
class ApplyResult:
    head: str | None
    outcomes: list[Outcome] = field(default_factory=list)  # one per change, same order
    replayed: bool = False  # the remote's first answer again: `head` may be older than now


# --------------------------------------------------------------------------- the interface


class Remote(abc.ABC):
    """One repository on one service. Safe to use from several trio tasks at once."""

    capabilities: Capabilities

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """A stable string naming this repo on this service (no secrets), used to key
        caches and journals: the same identity means the same remote content."""

    def __repr__(self) -> str:  # the identity holds no secrets; the token stays out
        return f"{type(self).__name__}({self.identity!r})"

    def file_name_problem(self, name: str) -> str | None:
        """Why this remote refuses every file named `name` (the last part of a path),
        or None. Such a name is refused where it is made (EINVAL), as a name no remote
        stores is: a change the remote refuses whatever it holds would be held forever."""
        return None

    @abc.abstractmethod
    async def info(self) -> RepoInfo:
        """Check that the repo exists and is reachable with our credentials."""

    @abc.abstractmethod
    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        """Entries directly below directory `path` ("" is the root), or all entries below
        it when `recursive`. Raises NotFound when `path` is not a directory."""

    @abc.abstractmethod
    async def stat(self, path: str) -> Entry | None:
        """The entry at `path`, or None."""

    @abc.abstractmethod
    async def read(
        self,
        path: str,
        dest: BinaryIO,
        *,
        version: str | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> Fetched:
        """Write the file's content (or the byte range, with `ranged_read`) into `dest`.
        With `version`, raise Conflict if the remote's current version differs."""

    async def read_many(
        self,
        paths: Sequence[str],
        new_file: Callable[[], Path],
        got: Callable[[str, Fetched, Path], None],
        *,
        transfers: int = 4,
        sizes: Mapping[str, int] | None = None,
    ) -> None:
        """Fetch several whole files for the cache ahead of use (a tree walk, a cold
        `grep -r`). For each file fetched: its content goes into a fresh `new_file()`,
        then `got(path, fetched, that_file)` is called, which takes the file over.
        Paths missing on the remote (or not files) are skipped silently. A failure
        stops the rest and is raised; what was delivered before it stays delivered.
        `sizes`: what the listing said, which an answer may not pass by far
        (`downloads.allowed`). This default reads them `transfers` at a time; adapters with
        a bulk read (native: one tar stream) override it."""

        async def one(path: str) -> None:
            dest = new_file()
            try:
                with dest.open("wb") as out:
                    size = (sizes or {}).get(path)
                    to = out if size is None else cast(BinaryIO, Capped(out, size, path))
                    fetched = await self.read(path, to)
            except NotFound:
                dest.unlink(missing_ok=True)
                return
            except BaseException:
                dest.unlink(missing_ok=True)
                raise
            got(path, fetched, dest)

        await run_limited([functools.partial(one, p) for p in dict.fromkeys(paths)], transfers)

    @abc.abstractmethod
    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        """Send `changes` (in order) and report one outcome per change.

        With `atomic_batch`, either every outcome is Applied or none took effect: the
        changes whose precondition failed are Conflicted, the others Failed(Aborted).
        Without it, each outcome stands on its own. Raises a RemoteError (and applied
        nothing) when the request as a whole failed: unreachable, 401, unknown repo."""

    async def stage(self, body: Callable[[], AsyncIterator[bytes]]) -> str:
        """Upload a content as it is produced (`body` yields it; a factory), ahead of
        the change that will name it: its SHA-256 as the remote computed it. A Write of
        that content with `staged` then sends none. Only with `staged_upload`."""
        raise Unsupported("this remote stages no uploads")

    async def upload_ahead(self, contents: Sequence[Content]) -> set[str]:
        """Store these contents (in as few requests as the remote allows) ahead of the
        changes that will name them: the SHA-256s it now holds. A Write of one of them
        with `staged` then sends none. Raises a RemoteError, or OSError when a source
        cannot be read. Only with `upload_ahead`."""
        raise Unsupported("this remote takes no contents ahead of their changes")

    def version_of(self, sha256: str) -> str | None:
        """The version token a file with this content has, where the remote derives
        versions from content (lets a replay recognise its own earlier write)."""
        return None

    async def changes(self, since: str | None, *, wait: float = 0.0) -> ChangeBatch:
        """Changes after head `since`, waiting up to `wait` seconds for one.
        Only with `change_feed`. Raises Gone when `since` is too old."""
        raise Unsupported("this remote has no change feed")

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


# --------------------------------------------------------------------------- helpers


async def run_limited(jobs: Sequence[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run the jobs, `limit` at a time; the first RemoteError or OSError (a content
    file gone while it was read, a full disk) cancels the others and is raised as
    itself, not inside an exception group: as one job alone raises it, and as callers
    catch it (an upload ahead whose file a newer save replaced meanwhile)."""
    if len(jobs) == 1:
        await jobs[0]()
        return
    slots = trio.Semaphore(max(1, limit))
    failed: list[RemoteError | OSError] = []
    async with trio.open_nursery() as nursery:

        async def one(job: Callable[[], Awaitable[None]]) -> None:
            async with slots:
                try:
                    await job()
                except (RemoteError, OSError) as e:
                    failed.append(e)
                    nursery.cancel_scope.cancel()

        for job in jobs:
            nursery.start_soon(one, job)
    if failed:
        raise failed[0]
