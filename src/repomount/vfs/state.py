"""What every part of the vfs shares: its configuration, tables and locks.

The state is split by owner (see docs/architecture.md):
- `inodes` (nodes.py): the namespace the kernel sees, the remote tree with the overlay
  laid over it; changed only under `ns_lock`;
- `overlay` (overlay.py): pending changes (the journal) and the blobs holding content;
- `files` (files.py): open files and their spools;
- `flusher`: sends the overlay; reports outcomes to `Vfs.applied` & co., which are the
  only code that applies them.

Lock order (never the other way round, and no listing awaited under `ns_lock`):
`ns_lock` -> per-inode `node_lock`. `ns_lock` serialises namespace changes and listing
merges; a node lock serialises making, freezing and replacing one file's spool. Code
that must list a directory while deciding a namespace change raises `NeedListing`; the
caller drops the lock, lists, and starts the decision again (nothing it saw is trusted
across that await).
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cachetools
import trio

from repomount import paths
from repomount.options import DEFAULTS
from repomount.remotes.base import Expect, ExpectT, Remote
from repomount.vfs.attrs import LocalAttrs
from repomount.vfs.conflicts import Policy
from repomount.vfs.content import ContentCache
from repomount.vfs.errors import FsError, not_found
from repomount.vfs.files import Files
from repomount.vfs.flusher import Flusher
from repomount.vfs.health import Health
from repomount.vfs.nodes import InodeTable, Node, child_path
from repomount.vfs.outcomes import FlushConfig, FlushHooks
from repomount.vfs.overlay import Overlay
from repomount.vfs.partial import Streams
from repomount.vfs.prefetch import Prefetcher
from repomount.vfs.trust import Trust

log = logging.getLogger(__name__)


class Invalidator(Protocol):
    """Tells the kernel to drop cached entries; must return at once (it only queues)."""

    def entry(self, parent_ino: int, name: str, deleted_ino: int = 0) -> None: ...

    def inode(self, ino: int, attr_only: bool = False) -> None: ...

    async def told(self, ino: int) -> None:
        """Until the invalidations of `ino` queued so far reached the kernel."""


class _NoInvalidation:
    def entry(self, parent_ino: int, name: str, deleted_ino: int = 0) -> None:
        pass

    def inode(self, ino: int, attr_only: bool = False) -> None:
        pass

    async def told(self, ino: int) -> None:
        pass


@dataclass
class VfsConfig:
    cache_dir: Path  # this mount's own cache directory
    state_dir: Path  # this mount's own state directory (journal, spools, conflict copies)
    # The mount options' defaults are options.DEFAULTS's (one place for all of them).
    metadata_ttl: float = DEFAULTS.metadata_ttl
    cache_size: int = DEFAULTS.cache_size  # bytes of fetched content kept on disk
    flush_delay: float = DEFAULTS.flush_delay
    max_flush_window: float = DEFAULTS.max_flush_window
    transfers: int = DEFAULTS.transfers
    on_conflict: Policy = DEFAULTS.on_conflict
    fsync_timeout: float = 60.0  # not an option: how long fsync waits for the remote
    local_only: tuple[str, ...] = DEFAULTS.local_only
    uid: int = field(default_factory=os.getuid)  # the owner files show (--uid)
    gid: int = field(default_factory=os.getgid)
    # What repo content may do here (trust.py): off, it can run nothing and write
    # nowhere outside the mount.
    trust_remote_code: bool = DEFAULTS.trust_remote_code
    follow_remote_symlinks: bool = DEFAULTS.follow_remote_symlinks


@dataclass
class Handle:
    fh: int
    node: Node
    writable: bool
    truncated: bool = False  # opened O_TRUNC (read-only too, as Linux does)
    losses_seen: int = 0  # of its inode's lost conflicts (VfsState.lost_lineage), told

    @property
    def commits(self) -> bool:
        """Its close and fsync journal the content: opened to write, or emptied."""
        return self.writable or self.truncated


@dataclass
class DirHandle:
    node: Node
    names: list[str]  # a snapshot: offsets index into it, so they stay stable
    read: bool = False  # entries were handed out: a read from offset 0 is a rewind


class NeedListing(Exception):
    """Raised under `ns_lock` when a decision needs directory `node` listed first."""

    def __init__(self, node: Node) -> None:
        super().__init__(node.path)
        self.node = node


class VfsState:
    def __init__(
        self,
        remote: Remote,
        config: VfsConfig,
        invalidator: Invalidator | None,
        hooks: FlushHooks,
    ) -> None:
        self.remote = remote
        self.config = config
        self.invalidator: Invalidator = invalidator or _NoInvalidation()
        self.inodes = InodeTable()
        self.cache = ContentCache(config.cache_dir, limit=config.cache_size)
        self.overlay = Overlay(config.state_dir)
        self.journal = self.overlay.journal
        self.files = Files(config.state_dir / "spool")
        self.attrs = LocalAttrs(
            self.journal.db, remote_keeps_mtimes=remote.capabilities.file_mtimes
        )
        self.trust = Trust(config.trust_remote_code, config.follow_remote_symlinks)
        self.health = Health()
        self.flusher = Flusher(
            remote,
            self.journal,
            hooks,
            FlushConfig(
                flush_delay=config.flush_delay,
                max_window=config.max_flush_window,
                transfers=config.transfers,
                policy=config.on_conflict,
                conflicts_dir=config.state_dir / "conflicts",
            ),
            self.health,
        )
        self.prefetch = Prefetcher(remote, self.cache, self.health, config.transfers)
        self.streams = Streams(remote, self.cache, self.health)
        self.head: str | None = None
        self.max_file_size: int | None = None  # the remote's, from its info() at start
        # ino of each directory whose listing is fresh; expiry = --metadata-ttl
        self.fresh: cachetools.TTLCache[int, bool] = cachetools.TTLCache(
            maxsize=1 << 20, ttl=config.metadata_ttl, timer=time.monotonic
        )
        self.dir_locks: dict[int, trio.Lock] = {}
        self.node_locks: dict[int, trio.Lock] = {}
        self.ns_lock = trio.Lock()
        self.handles: dict[int, Handle] = {}
        self.dirs: dict[int, DirHandle] = {}
        # Unlinked inodes whose change lost a conflict (policy theirs) while open: where
        # what their descriptors still write is saved (lost.py sets, fileio.py saves).
        self.saved_lineage: dict[int, Path] = {}
        # Open inodes whose content lost a conflict (moved to a copy, or saved aside):
        # how many times, and what happened last. Each descriptor open then hears it
        # once, at its next fsync (ESTALE), as Linux reports a writeback error to every
        # file open when it happened: the close that was the commit point may have been
        # another descriptor's (a child process's copy, closed at its exec).
        self.lost_lineage: dict[int, tuple[int, str]] = {}
        # Inodes whose new mode or time is being journaled with a copy of their content
        # (core.py's _journal_attrs, which waits for the copy): busy for listings, which
        # would otherwise put the remote's mode back before the row takes the new one.
        self.journaling_attrs: set[int] = set()
        self._next_fh = 1

    def node(self, ino: int) -> Node:
        node = self.inodes.get(ino)
        if node is None:
            raise not_found(f"inode {ino}")
        return node

    def node_lock(self, ino: int) -> _Held:
        return _Held(self.node_locks, ino)

    def dir_lock(self, ino: int) -> _Held:
        return _Held(self.dir_locks, ino)

    def new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def handle(self, fh: int) -> Handle:
        h = self.handles.get(fh)
        if h is None:
            raise FsError(errno.EBADF)
        return h

    def node_at(self, path: str) -> Node | None:
        """The node at `path` in the part of the tree already loaded (no requests)."""
        node = self.inodes.root
        for name in path.split("/") if path else ():
            if node.children is None or name not in node.children:
                return None
            node = node.children[name]
        return node

    def journal_add(self, op: str, path: str, **kw: object) -> None:
        self.journal.add(op, path, **kw)  # type: ignore[arg-type]
        self.flusher.notify()

    def journal_write(
        self, node: Node, blob: str, expect: ExpectT, *, at: str | None = None
    ) -> None:
        """Journal `blob` as the content of `node` (at its path, or at `at`: where a
        rename journaled before it moves the node puts it), with the mode and
        modification time it has now (sent where the remote keeps them)."""
        path = node.path if at is None else at
        self.journal_add(
            "write", path, blob=blob, mode=node.mode, mtime_ns=node.mtime_ns, expect=expect
        )

    def require(self, capability: str, path: str) -> None:
        """Refuse, clearly, what the remote cannot do (rather than queue a change that
        can never be sent)."""
        if not getattr(self.remote.capabilities, capability):
            log.warning("%s %s: not supported by %s", capability, path, self.remote.identity)
            raise FsError(errno.EPERM, f"{capability} is not supported by this remote")

    def is_local_name(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.config.local_only)

    def valid_child_path(self, parent: Node, name: str) -> str:
        """The path of a name about to be made (create, mkdir, symlink, rename's
        target), or the errno the kernel hands the program: a name no remote stores is
        refused now, not held forever as a change that can never go."""
        try:
            path = paths.validate_path(child_path(parent, name))
        except paths.InvalidPathError as e:
            code = errno.ENAMETOOLONG if e.too_long else errno.EINVAL
            raise FsError(code, str(e)) from e
        problem = paths.control_character_problem(name)
        if problem is not None and not self.is_local_name(name):  # (local ones never go)
            raise FsError(errno.EINVAL, f"{path!r} {problem}")
        return path

    def check_file_name(self, path: str, name: str) -> None:
        """A file about to be named `name` (create, a file's rename): EINVAL where the
        remote refuses every file of that name (Sentry: a backslash)."""
        problem = self.remote.file_name_problem(name)
        if problem is not None and not self.is_local_name(name):
            raise FsError(errno.EINVAL, f"{path!r} {problem}")


class _Held:
    """`async with`: the inode's lock in `table`, held. The table keeps a lock only while
    it is held or waited for (a lock per inode ever used would cost a tree walk's worth
    of memory), so nothing else may remove one: a task would then make a second lock of
    the inode. Taking a free lock does not yield before it is held, and a release with
    waiters hands the lock on (it stays locked), so an unlocked lock has no waiter.
    (A class, not a generator: every read and write request takes one.)"""

    __slots__ = ("_ino", "_lock", "_table")

    def __init__(self, table: dict[int, trio.Lock], ino: int) -> None:
        self._table, self._ino = table, ino

    async def __aenter__(self) -> None:
        lock = self._table.get(self._ino)
        if lock is None:
            lock = self._table[self._ino] = trio.Lock()
        self._lock = lock
        try:
            await lock.acquire()
        except BaseException:  # (cancelled before it was held)
            self._drop_if_unused()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        self._drop_if_unused()

    def _drop_if_unused(self) -> None:
        if not self._lock.locked() and self._table.get(self._ino) is self._lock:
            del self._table[self._ino]


def local_only(node: Node) -> bool:
    """A name the remote has never had (a file created here, not yet uploaded)."""
    if node.is_dir:
        return not node.on_remote
    return node.version is None and node.base == Expect.ABSENT


def is_ancestor(a: Node, b: Node) -> bool:
    node: Node | None = b
    while node is not None:
        if node is a:
            return True
        node = node.parent
    return False
