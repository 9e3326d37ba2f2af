"""The vfs facade: every filesystem operation the fuse layer calls, in terms of nodes.

No pyfuse3 and no httpx here: remote access goes through `remotes.base.Remote`, kernel
cache invalidation through the `Invalidator` the fuse layer hands in, errors leave as
`FsError` or `RemoteError` and are mapped to errno in `fuse/errors.py`.

Writes never wait for the network: close() freezes the file's spool into the journal,
namespace changes are journaled as they happen, and the flusher sends them in batches.
The operations live in layers by what they own (state.py lists them and the lock
order): listing.py (the remote tree), namespace.py, sources.py and fileio.py (file
content and handles); this module adds attributes, the flusher's outcome hooks (the
only code that applies outcomes) and status.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import trio

from repomount import paths, statusview
from repomount.remotes.base import MAX_MTIME, MIN_MTIME, Expect, Remote
from repomount.vfs import stateroom
from repomount.vfs.coalesce import Planned
from repomount.vfs.errors import FsError
from repomount.vfs.lost import LostConflicts
from repomount.vfs.namespace import RENAME_EXCHANGE, RENAME_NOREPLACE
from repomount.vfs.nodes import MODE_BITS, Node
from repomount.vfs.outcomes import Landing
from repomount.vfs.pending import PendingSummary, summarize
from repomount.vfs.scheduling import expected_at
from repomount.vfs.state import Invalidator, VfsConfig, local_only

__all__ = [
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "Invalidator",
    "Vfs",
    "VfsConfig",
]

log = logging.getLogger(__name__)


class Vfs(LostConflicts):
    def __init__(
        self, remote: Remote, config: VfsConfig, invalidator: Invalidator | None = None
    ) -> None:
        super().__init__(remote, config, invalidator, hooks=self)
        self.init_listings()
        self.inodes.root.uid, self.inodes.root.gid = config.uid, config.gid
        self.attrs.lay_over(self.inodes.root)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, replay_timeout: float = 120.0) -> list[int]:
        """Check the remote, then send what an earlier run left in the journal, before
        anything is served (so the tree we show is the remote's). Returns the ids still
        pending after that."""
        info = await self.remote.info()
        self.gens.observe_head(info.head)
        self.head = info.head
        self.max_file_size = info.max_file_size
        self.flusher.head = info.head
        if not len(self.journal):
            return []
        summary = await self.pending_summary(limit=0)
        log.info("replaying %d change(s) from an earlier run", summary.count)
        self.journal.retry_now()
        left = await self.flusher.drain_with_own_loop(replay_timeout)
        if left:
            unsent = (await self.pending_summary(limit=statusview.LISTED)).as_status()
            log.warning(
                "%s could not be replayed and stay in the journal",
                statusview.changes_named(unsent),
            )
            self.leftover = set(left)  # shown in the tree from the journal (leftover.py)
        return left

    def hosts(self) -> list[Callable[[], Awaitable[None]]]:
        """The background tasks that host the vfs's own work (read-ahead, large files
        arriving, staged uploads, contents sent ahead, spools made ahead, the whole
        tree's load), to run beside the flusher while the mount serves."""
        return [
            self.prefetch.run,
            self.streams.run,
            self.flusher.stager.run,
            self.flusher.ahead.run,
            self.files.ready.run,
            self.load_tree_forever,
        ]

    async def close(self) -> None:
        self.handles.clear()
        self.files.close_all()
        self.overlay.close()

    # ------------------------------------------------------------------ attributes

    def forget(self, items: Sequence[tuple[int, int]]) -> None:
        self.sweep_wanted = True
        for ino, count in items:
            self.inodes.forget(ino, count)
            if self.inodes.get(ino) is None:  # gone for good: so is its per-inode state
                self._listed_gen.pop(ino, None)

    def getattr(self, ino: int) -> Node:
        return self.node(ino)

    async def setattr(
        self,
        ino: int,
        fh: int | None,
        *,
        size: int | None = None,
        mode: int | None = None,
        mtime_ns: int | None = None,
        atime_ns: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> Node:
        """chmod, chown, utimensat, truncate. A file's mode and modification time go
        to remotes that keep them; everything else is kept locally (docs/semantics.md)."""
        node = self.node(ino)
        for t in (mtime_ns, atime_ns):
            if t is not None and not MIN_MTIME * 10**9 <= t <= MAX_MTIME * 10**9:
                why = "a time before 1698 or after 2242, which no listing could show"
                raise FsError(errno.EINVAL, f"{node.path}: {why}")
        if node.link_as_file and (size is not None or mode is not None):  # (trust.py)
            code = errno.EACCES if size is not None else errno.EPERM
            raise FsError(code, f"{node.path}: a link that leaves the mount, read-only")
        if size is not None:
            if node.is_dir:
                raise FsError(errno.EISDIR)
            await self.resize(node, size, None)
        caps = self.remote.capabilities
        is_file = node.kind == "file"
        send = False  # a new mode or time the remote keeps: journaled
        if mode is not None and node.mode != mode & MODE_BITS:
            node.mode = mode & MODE_BITS
            send = is_file and caps.file_modes
        if uid is not None:
            node.uid = uid
        if gid is not None:
            node.gid = gid
        if mtime_ns is not None:
            send = send or (is_file and caps.file_mtimes and node.mtime_ns != mtime_ns)
            if atime_ns is None:
                node.keep_atime()  # (`touch -m`: the access time stays)
            node.mtime_ns = mtime_ns
        if atime_ns is not None:
            node.atime_ns = atime_ns
        if send:
            await self._journal_attrs(node)
        keeps_mode = node.is_dir or not caps.file_modes
        self.attrs.remember(
            node,
            mode=node.mode if mode is not None and keeps_mode else None,
            uid=uid,
            gid=gid,
            mtime_ns=mtime_ns,
            atime_ns=atime_ns,
        )
        if any(v is not None for v in (size, mode, uid, gid, mtime_ns, atime_ns)):
            node.ctime_ns = time.time_ns()
        return node

    async def _journal_attrs(self, node: Node) -> None:
        """chmod, utimensat: the remote keeps a file's mode and mtime only with its
        content, so they ride on the file's pending write, or on a new write of the same
        content (which the native remote takes without an upload)."""
        async with self.node_lock(node.ino):
            if node.local or not node.attached or self.files.dirty(node.ino):
                return  # local only, or its close will carry them
            content = self.overlay.pending_blob(node.ino)
            if content is not None:
                # A new row with the file's pending content (its own: the overlay's,
                # which follows the inode through renames), at its name now: coalesced
                # into one with the row pending, or sent after it should that one be on
                # the wire. (Not the newest pending write at this name: after a rename
                # over a file not sent yet, that is the replaced file's content. Nor
                # nothing for a file never acknowledged: a temp file renamed over its
                # final name has its row under the temp name.)
                self.journal_write(node, content, node.base)
                return
            if local_only(node):
                return
            self.journaling_attrs.add(node.ino)  # (a listing meanwhile leaves it alone)
            try:
                blob = await self.content_to_new_blob(node)
                if not node.attached:
                    self.journal.blob_path(blob).unlink(missing_ok=True)
                    return
                self.journal_write(node, blob, node.base)
                self.overlay.set_pending_blob(node.ino, blob)
            finally:
                self.journaling_attrs.discard(node.ino)

    def statfs(self) -> dict[str, int]:
        return stateroom.statfs(self.config.state_dir, len(self.inodes), paths.MAX_NAME_BYTES)

    async def fsyncdir(self, ino: int) -> None:
        """The directory's namespace changes are acknowledged by the remote, or durable
        in the journal (a power loss too) and an error (as fsync)."""
        d = self.node(ino)
        prefix = d.path + "/" if d.path else ""
        ids = [
            r.id
            for r in self.journal.records()
            if any(p == d.path or p.startswith(prefix) for p in r.paths())
        ]
        await self.acknowledged(ids, None)

    # ------------------------------------------------------------------ flusher hooks

    def applied(self, op: Planned, version: str | None, at: Landing) -> None:
        """The remote acknowledged `op` (as `version`, at `at`)."""
        path = op.dst if op.op == "rename" and op.dst else op.path
        others = [op.path] if op.path != path else []
        if at.replayed and op.ids and max(op.ids) <= self.journal.earlier_runs_up_to:
            # An earlier run's change, which the remote had applied (its answer lost):
            # before this mount listed anything, at a head older than those it has
            # seen. A new generation would make every listing at the heads seen since
            # stale for these paths, and hide them. A change of this run keeps one even
            # when replayed: its first attempt may have landed while a listing was in
            # flight. (So may an earlier run's change first sent while serving, its
            # answer lost: that rare case is taken as landed before.)
            self.gens.ours_from_before(at.head, *others, path, version=version)
        else:
            self.gens.touched_by_us(at.head, *others, path, version=version)
        if op.op == "write" and op.blob is not None and version is not None:
            self._content_landed(op, op.blob, version)
        if op.op == "rename":
            # (what it moved: as planned, or as its records say now, rebased since)
            moved = {e for e in expected_at(op, op.path, self.journal) if isinstance(e, str)}
            self._rename_landed(op.path, path, version, moved)
        if op.op == "delete":
            return
        # Where what this op made is named now (a pending rename of a directory above
        # moves it); None: a later pending change removed it, and the node at the path
        # now is another file, made after it.
        now = self.journal.name_after(path, max(op.ids, default=0))
        node = self.node_at(now) if now is not None else None
        if node is None:
            return
        node.on_remote = True
        if now == path:
            _on_remote_above(node)
        olds = expected_at(op, path, self.journal)
        if (
            op.op in ("write", "rename", "symlink")
            and version is not None
            and (node.base in olds or Expect.ANY in olds)
        ):
            # The node's changes were chained to this one: rebase it as the journal
            # rebases its later records.
            node.base = version
        if op.op == "symlink" and version is not None and node.kind == "symlink":
            # (not a file renamed onto the link's name since: it keeps its own version)
            # Its times are the ones shown (no remote keeps a link's), kept with the
            # version it landed as, across remounts, like a written file's.
            self.attrs.uploaded(node, node.version, version)
            node.version = version
            node.read_from(path)

    def _content_landed(self, op: Planned, blob: str, version: str) -> None:
        """The file whose pending content `blob` is (wherever it is named now) is on the
        remote as `version` at `op.path`: keep the blob as that cache entry (no download
        later), and stop treating the file as pending."""
        ino = self.overlay.owner_of(blob)
        node = self.inodes.get(ino) if ino is not None else None
        if node is None:
            return
        if node.attached:  # (at its name now: a rename still pending takes it along)
            self.attrs.uploaded(node, node.version, version)
        if node.version is not None and node.version != version:
            self.cache.drop(node.source, node.version)  # (the content it replaced)
        node.version = version
        node.read_from(op.path)
        if not self.remote.capabilities.complete_listing:
            node.listed = False  # (its new content may be one listings leave out)
        if not self.journal.uses_blob(blob, excluding=set(op.ids)):
            self.overlay.set_pending_blob(node.ino, None)
        # else a later row sends the same content again (its new mode or times, at its
        # new name): the file stays pending on it, and that row's landing settles it
        # (here: owner_of must still know the blob, or the file would go on being read
        # from this name, which the row's rename may delete).
        node.paged = version
        source = self.overlay.take_uploaded(blob, op.ids)
        if source is not None:
            # A link, not a move: the blob goes only once the rows that send it are
            # deleted (a crash in between must not leave a row without its content).
            # The cache is only a copy: failing to keep one (its directories emptied
            # meanwhile by someone clearing ~/.cache) must not fail the booking, which
            # was taken for a failure of the state directory and sent the batch again.
            try:
                self.cache.link_in(source, op.path, version)
            except OSError as e:
                log.info("%s: not kept in the content cache: %s", op.path, e)

    def _rename_landed(
        self, src: str, dst: str, version: str | None, moved: set[str] | None = None
    ) -> None:
        """What the remote kept at `src` is at `dst` now: files read from there follow.
        `moved`: the versions the rename may have moved (empty or None: unknown)."""
        node = self.node_at(dst)
        if node is None or node.is_dir:
            # A directory (or something renamed again since): every file read from
            # below src follows, wherever its directory is named now.
            for n in self.inodes.nodes():
                if n.fetch_path is not None and n.fetch_path.startswith(src + "/"):
                    n.read_from(dst + n.fetch_path[len(src) :])
            if node is not None:
                return
        if node is None or node.fetch_path != src:
            # Renamed again (or replaced) since: find it by where it is read from. Only
            # a file that still has a name, and holds the version that moved: an unlinked
            # file kept open (or looked up) reads an older version from `src`, and
            # relabelling that content would serve wrong bytes (found by the model run).
            node = next(
                (
                    n
                    for n in self.inodes.nodes()
                    if n.fetch_path == src
                    and not n.is_dir
                    and n.attached
                    and (not moved or n.version in moved)
                ),
                None,
            )
        if node is None:
            return
        if (
            version is not None
            and node.version is not None
            and version != node.version
            and node.version not in (moved or ())
        ):
            # The remote moved other content than this file's: a rename sent without
            # a precondition (--on-conflict mine) over a change made elsewhere. What it
            # moved is the file now, to be fetched; our copy is not relabelled as it
            # (that showed the old bytes as the new version, and the next save
            # replaced theirs without a conflict).
            node.version = version
            node.read_from(dst)
            self.invalidator.inode(node.ino)
            if node.parent is not None:
                self.expire(node.parent.ino)  # (its size, its times)
            return
        new_version = version if version is not None else node.version
        if node.version is not None and new_version is not None:
            self.cache.rename(src, dst, node.version, new_version)
        node.version = new_version
        node.read_from(dst)

    # ------------------------------------------------------------------ status

    def held_conflicts(self) -> list[str]:
        """The paths of changes held after losing a conflict (--on-conflict fail): the
        next mount does not send them either."""
        held = self.journal.records("held")
        return list(dict.fromkeys(r.path for r in held if r.held_for == "conflict"))

    async def pending_summary(self, *, limit: int | None = None) -> PendingSummary:
        """The pending changes, counted per change the remote will see (pending.py);
        a large journal is summarised in a worker thread."""
        records = self.flusher.outstanding()

        def blob_size(name: str) -> int:
            try:
                return self.journal.blob_path(name).stat().st_size
            except OSError:  # landed meanwhile
                return 0

        job = partial(summarize, records, blob_size, time.time(), limit=limit)
        return await trio.to_thread.run_sync(job) if len(records) > 500 else job()

    def pending_error(self) -> str | None:
        """The newest error a pending change met (why it is still pending), or None."""
        errors = [r for r in self.flusher.outstanding() if r.last_error]
        return max(errors, key=lambda r: r.id).last_error if errors else None

    def _paths_of(self, ids: Sequence[int]) -> list[str]:
        """The paths of these journal rows, each once, in journal order."""
        wanted = set(ids)
        return list(dict.fromkeys(r.path for r in self.journal.records() if r.id in wanted))

    async def drain(
        self, timeout: float, *, own_loop: bool = False, later_too: bool = True
    ) -> list[str]:
        """Send everything now; what is still pending afterwards. `own_loop` when the
        flusher's background task is not running; without `later_too`, what was
        written before this began (Flusher.drain)."""
        unjournaled = []
        for ino in self.files.dirty_inos():  # written, still open: commit what is there
            node = self.inodes.get(ino)
            if node is not None and node.attached:
                async with self.node_lock(ino):
                    try:
                        self.commit_content(node)
                    except OSError as e:  # (the state directory's disk full): still open
                        log.warning("%s: cannot journal what was written: %s", node.path, e)
                        unjournaled.append(node.path)
        if own_loop:
            left = await self.flusher.drain_with_own_loop(timeout)
        else:
            left = await self.flusher.drain(timeout, later_too=later_too)
        return list(dict.fromkeys([*self._paths_of(left), *unjournaled]))

    async def status(self, *, limit: int | None = None) -> dict[str, object]:
        """What `repomount status` shows; `limit` bounds the pending changes listed
        (the counts are always of all of them)."""
        health = self.health
        return {
            "remote": self.remote.identity,
            "head": self.head,
            "online": health.online,
            "online_since": health.since if health.online else None,
            "offline_since": None if health.online else health.since,
            **(await self.pending_summary(limit=limit)).as_status(),
            "conflicts": [vars(c) for c in self.flusher.conflicts],
            "set_aside": self.journal.set_aside_rows(),
            "local_only": sorted(n.path for n in self.inodes.nodes() if n.local and n.attached),
            "last_error": health.error,
            "last_error_at": health.last_error_at,
            "open_files": len(self.handles),
            "inodes": len(self.inodes),
            "cache_bytes": self.cache.usage(),
            "state_dir": str(self.config.state_dir),
        }


def _on_remote_above(node: Node) -> None:
    """What landed at `node`'s path made the directories above it the remote's: where
    directories exist only through their files (no mkdir is sent), one made here was
    never marked so, and the mount kept it as its own for good, never listing it again:
    files added or changed in it elsewhere never showed (the fsx exerciser)."""
    d = node.parent
    while d is not None and d.parent is not None and not d.on_remote:
        d.on_remote = True
        d = d.parent
