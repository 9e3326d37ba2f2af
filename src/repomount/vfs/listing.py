"""The remote tree: directory listings merged under the overlay.

A listing says what the remote held at some point; our own commits may land while it is
in flight, or a lagging replica may answer from before them. Its answer must not roll
their paths back. So generations count what we have seen: every applied change of ours
records one for the paths it touched, and every repo head we learn of gets one when
first seen. A listing is stamped with the generation of its head when that head is
known (else with the generation current when its request started), and a merge leaves
alone any path (or anything below a path) one of our changes touched after its stamp;
an answer older than one already merged for the directory is dropped whole.
A path with a pending change, a file being written, or a local-only file is never
replaced by a listing either, nor is a directory holding one: the overlay decides.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Sequence
from itertools import chain

from repomount import paths
from repomount.remotes.base import Entry, Expect, NotFound, RemoteError
from repomount.vfs.errors import FsError, not_found
from repomount.vfs.generations import Generations
from repomount.vfs.leftover import lay_leftovers
from repomount.vfs.nodes import HERE, Node, below, default_mode
from repomount.vfs.state import NeedListing, VfsState, local_only
from repomount.vfs.treeload import TreeLoad

log = logging.getLogger(__name__)


class Listings(VfsState):
    def init_listings(self) -> None:
        self.gens = Generations()  # what changed of ours since a listing's request
        self._listed_gen: dict[int, int] = {}  # dir ino -> stamp of its merged listing
        self.sweep_wanted = False  # the kernel forgot something: sweep soon
        self.held_back: set[int] = set()  # open files a listing left at their version
        self.adopting: set[int] = set()  # files taking the remote's version (conflict)
        # The change feed is being followed: it re-lists what changes elsewhere, so a
        # loaded listing stays true past the metadata TTL (set by the watcher).
        self.feed_live = False
        # Directories to re-list at next use even while the feed is followed: a
        # re-listing was asked for (a held-back file closed, a conflict adopted) or
        # failed, or feed news arrived while their listing was in flight.
        self.relist: set[int] = set()
        self.feed_news = 0  # batches of feed news seen (the watcher counts them)
        # Journal rows an earlier run left that the replay could not send (leftover.py)
        self.leftover: set[int] = set()
        # Directories first used offline: an empty stand-in for a listing never made,
        # and when listing them last failed (tried again after UNLISTED_RETRY seconds)
        self.unlisted: dict[int, float] = {}
        self.tree = TreeLoad()  # the whole tree's load behind lookups (treeload.py)
        # Directories a lookup listed without what is below them: a read of one lists
        # its subtree (treeload.py)
        self.alone: set[int] = set()

    # ------------------------------------------------------------------ listing

    def authoritative(self, d: Node) -> bool:
        """Whether the local children of `d` are all there is to know right now: a
        directory made here, or one whose (re)naming the remote has not seen yet."""
        if not d.on_remote:
            return True
        node: Node | None = d
        while node is not None and node.parent is not None:
            if self.journal.touches(node.path):
                return True
            node = node.parent
        return False

    def _trusted(self, d: Node) -> bool:
        failed = self.unlisted.get(d.ino)
        if failed is not None:  # a stand-in: list it for real as soon as that works
            return not self.health.usable and time.monotonic() - failed < UNLISTED_RETRY
        return d.children is not None and (
            d.ino in self.fresh
            or (self.feed_live and self.health.usable and d.ino not in self.relist)
            or not self.health.usable
            or self.authoritative(d)
        )

    def expire(self, ino: int) -> None:
        """List this directory again at its next use (the feed being followed or not)."""
        self.fresh.pop(ino, None)
        self.relist.add(ino)

    async def listed(self, d: Node, *, walk: bool = False) -> dict[str, Node]:
        """The children of directory `d`, from a listing no older than the metadata TTL
        (or older, while the remote is unreachable). `walk`: a directory read, which
        a walk below it may follow (treeload.py)."""
        if not d.is_dir:
            raise FsError(errno.ENOTDIR)
        below = self._walks_below(d, walk)  # (asked again after each wait)
        if self._trusted(d) and not below:
            assert d.children is not None
            return d.children
        if d.children is None or below:
            if not walk and self.tree.spent() and self.health.usable:
                self.tree.want()
            if await self.tree.wait() and self._trusted(d) and not self._walks_below(d, walk):
                assert d.children is not None
                return d.children
        async with self.dir_lock(d.ino):
            if d.children is None or d.ino not in self.fresh or self._walks_below(d, walk):
                await self.refresh(d, walk=walk)
        if d.children is None:  # removed while its first listing was in flight
            raise not_found(d.path)
        return d.children

    def _walks_below(self, d: Node, walk: bool) -> bool:
        """A read of a directory a lookup listed alone: list its subtree now (unless
        the remote is away, or our pending changes decide what it holds: what is known
        is served)."""
        return (
            walk
            and d.ino in self.alone
            and self.health.usable
            and self.remote.capabilities.recursive_listing
            and not self.authoritative(d)
        )

    def listed_locked(self, d: Node, just_listed: set[int]) -> dict[str, Node]:
        """`listed` for callers holding `ns_lock`: NeedListing instead of awaiting."""
        if not d.is_dir:
            raise FsError(errno.ENOTDIR)
        if self._trusted(d) or (d.ino in just_listed and d.children is not None):
            assert d.children is not None
            return d.children
        raise NeedListing(d)

    async def refresh(
        self, d: Node, *, recursive: bool = False, walk: bool = False, load_all: bool = False
    ) -> None:
        # A directory never listed (or forgotten by the sweep) is listed with all that
        # is below it where the remote can do that in one paged request: a walk of the
        # tree (find, ls -lR, an indexer) then costs one listing, not one per directory.
        # A lookup lists its directory alone where that costs less, and a read of such
        # a directory lists its subtree (treeload.py). `load_all`: load every directory
        # the recursive listing holds, not only those loaded before.
        first = d.children is None or d.ino in self.unlisted
        below = self._walks_below(d, walk)
        recursive = self.remote.capabilities.recursive_listing and (recursive or first or below)
        load_all = load_all or below
        alone = (
            recursive
            and first
            and not (walk or load_all)
            and self.remote.capabilities.directory_listing
            and self.tree.lists_alone()
        )
        recursive = recursive and not alone
        started, news = self.gens.generation, self.feed_news
        try:
            listing = await self.remote.list_tree(d.path, recursive=recursive)
        except NotFound:
            self.alone.discard(d.ino)  # (tried: not listed below again)
            if d.children is not None:
                return
            raise not_found(d.path) from None
        except RemoteError as e:
            self.health.failed(e)
            if d.children is not None:
                self.relist.add(d.ino)  # (tried again at next use)
                if d.ino in self.unlisted:
                    self.unlisted[d.ino] = time.monotonic()
                return  # offline: serve what we know
            if not e.retryable or not d.attached:
                raise
            # Offline, and never listed: nothing is known of what it holds, but names
            # can still be made in it (a lookup answers ENOENT, a readdir EIO), against
            # an unknown state: a name the remote has is a conflict when sent.
            d.children = {}
            self.unlisted[d.ino] = time.monotonic()
            self.relist.add(d.ino)
            if self.leftover:
                lay_leftovers(self, d, self.leftover)
            return
        self.health.ok()
        if below:  # (tried, whatever its merge keeps: not listed below again)
            self.alone.discard(d.ino)
        stamp = self.gens.stamp(listing.head, started)
        self.gens.observe_head(listing.head)
        if stamp < self._listed_gen.get(d.ino, -1):
            return  # older than what we merged already (a lagging replica)
        self.head = listing.head or self.head
        async with self.ns_lock:
            merged: list[int] = []
            if not d.attached:
                pass
            elif listing.recursive:
                load_all = load_all or first
                merged = self._merge_tree(d, listing.entries, stamp, load_all=load_all)
                if load_all:  # (a poll re-lists what is loaded: it loads nothing below)
                    self.tree.loaded |= d.parent is None
                    self.alone.difference_update(merged)
            else:
                self._merge_listing(d, listing.entries, stamp, {})
                self._listed_gen[d.ino] = stamp
                merged = [d.ino]
                if alone and not self.tree.loaded:  # (else the tree's load has what is below)
                    self.alone.add(d.ino)
        self.fresh[d.ino] = True
        self.unlisted.pop(d.ino, None)
        # Feed news that came while this was in flight may be newer than the answer:
        # trust it for the TTL only, then list again.
        stale = self.feed_news != news
        if stale:
            self.relist.update(merged)
        else:
            self.relist.difference_update(merged)

    async def load_tree_forever(self) -> None:
        """Background task: the whole tree's load, once lookups ask for it."""
        await self.tree.run(self._load_whole_tree)

    async def _load_whole_tree(self) -> None:
        root = self.inodes.root
        try:
            async with self.dir_lock(root.ino):
                if not self.tree.loaded:  # (a read of the root may have loaded it meanwhile)
                    await self.refresh(root, recursive=True, load_all=True)
        except (FsError, RemoteError) as e:  # (each use lists on its own meanwhile)
            log.info("loading the whole tree failed: %s", e)
        except Exception:  # (a background task: its failure must not end the mount)
            log.exception("loading the whole tree failed")

    async def refresh_tree(self) -> None:
        """Re-list the whole loaded tree: one recursive listing where the remote can
        (a poll of a remote without a change feed), else directory by directory."""
        root = self.inodes.root
        if not self.remote.capabilities.recursive_listing:
            await self.refresh_dirs(self.loaded_dirs())
        elif root.children is not None:
            self.expire(root.ino)
            async with self.dir_lock(root.ino):
                await self.refresh(root, recursive=True)

    async def refresh_dirs(self, dir_paths: Sequence[str]) -> None:
        """Re-list these directories now, where loaded (remote changes seen by the
        watcher)."""
        for p in dir_paths:
            d = self.node_at(p)
            if d is not None and d.is_dir and d.children is not None:
                self.expire(d.ino)
                async with self.dir_lock(d.ino):
                    await self.refresh(d)

    def loaded_dirs(self) -> list[str]:
        out = []
        stack = [self.inodes.root]
        while stack:
            d = stack.pop()
            if d.children is not None:
                out.append(d.path)
                stack.extend(c for c in d.children.values() if c.is_dir)
        return out

    # ------------------------------------------------------------------ merging

    def _merge_tree(
        self, top: Node, entries: Sequence[Entry], stamp: int, *, load_all: bool = False
    ) -> list[int]:
        """Merge a recursive listing of `top`: each directory's part as its own listing,
        parents first. Directories not loaded before are loaded where the walk reaches
        them through a first listing (the whole answer is at hand); a loaded one is
        refreshed; one forgotten by the sweep stays forgotten (listed when next used)."""
        prefix = f"{top.path}/" if top.path else ""
        inside = [e for e in entries if e.path.startswith(prefix) and e.path != top.path]
        if len(inside) < len(entries):
            log.warning(
                "skipped %d remote entries not below %r", len(entries) - len(inside), top.path
            )
        below: dict[str, list[Entry]] = {top.path: []}
        below.update((e.path, []) for e in inside if e.kind == "dir")
        for e in inside:
            parent = paths.parent_of(e.path)
            if parent in below:
                below[parent].append(e)
            else:
                self._imply_dir(below, parent, e)
        load_all = load_all or top.children is None
        times: dict[int, int] = {}
        queue = [top]
        merged: list[int] = []
        while queue:
            d = queue.pop()
            if stamp < self._listed_gen.get(d.ino, -1):
                continue  # a newer listing of it was merged already
            if not self._merge_listing(d, below.get(d.path, []), stamp, times):
                continue  # our own pending changes decide what it holds
            self._listed_gen[d.ino] = stamp
            self.fresh[d.ino] = True
            merged.append(d.ino)
            assert d.children is not None
            queue.extend(
                c
                for c in d.children.values()
                if c.is_dir
                and c.path in below
                and (load_all or c.children is not None)
                and not self.busy(c)
            )
        return merged

    @staticmethod
    def _imply_dir(below: dict[str, list[Entry]], path: str, entry: Entry) -> None:
        """A remote without directory entries implies them by what is below them."""
        below[path] = [entry]
        while True:
            parent = paths.parent_of(path)
            implied = Entry(path=path, kind="dir")
            if parent in below:
                below[parent].append(implied)
                return
            below[parent] = [implied]
            path = parent

    def _merge_listing(
        self, d: Node, entries: Sequence[Entry], stamp: int, times: dict[int, int]
    ) -> bool:
        """(`times`: the modification times met so far in this listing, shared.)"""
        first_time = d.children is None
        if d.children is None:
            d.children = {}
        if self.gens.stale_for(d.path, stamp) or self.authoritative(d):
            # The directory itself moved or changed under this answer, or a pending
            # change of ours (a mkdir, a rename onto or away from its name) decides
            # what it holds: the remote's listing of the name is of another directory.
            if self.leftover:
                lay_leftovers(self, d, self.leftover)
            return False
        seen: set[str] = set()
        named = False  # a name came, went, or took another inode
        base = d.path  # (computed from the parents: once, not per entry)
        kept_times = self.remote.capabilities.file_mtimes
        for e in entries:  # (each one checked by its adapter: remotes/validate.py)
            name = e.name
            if paths.joined(base, name) != e.path:
                log.warning("skipping remote entry %r: not in directory %r", e.path, d.path)
                continue
            seen.add(name)
            if self.journal.touches(e.path) or self.gens.stale_for(e.path, stamp):
                continue  # our own change decides what is there
            node = d.children.get(name)
            if node is not None and self.busy(node):
                if self.files.get(node.ino) is not None and node.version != e.version:
                    self.held_back.add(node.ino)  # caught up once its last handle goes
                continue
            as_file = e.kind == "symlink" and self.trust.link_as_file(e.path, e.target)
            if node is not None and (
                node.kind != e.kind or (node.version != e.version and node.link_as_file != as_file)
            ):  # (the kernel cannot change an inode's type: a new one)
                self.inodes.detach(node)
                self.invalidator.entry(d.ino, name, node.ino)
                node = None
            guarded = self.trust.guards_owner(e.path)
            if node is None:
                named = True
                node = self.inodes.new_node(
                    d,
                    name,
                    e.kind,
                    size=e.size,
                    version=e.version,
                    fetch_path=HERE,  # (e.path: checked above)
                    base=e.version if e.version is not None else Expect.ANY,
                    on_remote=True,
                    mtime_ns=_time_ns(e, times),
                    mode=e.mode if e.mode is not None else default_mode(e.kind),
                    target=e.target,
                    link_as_file=as_file,
                    link_from_remote=e.kind == "symlink",
                    uid=self.config.uid,
                    gid=self.config.gid,
                    listed=True,
                )
                self.attrs.lay_over(node, owner=not guarded)
                self.trust.from_remote(node, e.path, self.invalidator)
                continue
            changed = node.version != e.version or node.size != e.size
            node.on_remote = node.listed = True
            node.target = e.target
            node.link_from_remote |= changed and e.kind == "symlink"  # (changed elsewhere)
            node.fetch_path = HERE
            node.base = e.version if e.version is not None else Expect.ANY
            shown = (node.mode, node.mtime_ns)
            if changed:
                node.version = e.version
                node.size = e.size
            # A new version brings its time; where the remote keeps a file's time, the
            # same version may come with a new one too (set elsewhere).
            if e.time_ns() is not None and (changed or (kept_times and e.kind == "file")):
                node.mtime_ns = _time_ns(e, times)
            if e.mode is not None and not node.is_dir:
                node.mode = e.mode
            self.attrs.lay_over(node, owner=not guarded)
            if changed and not node.is_dir:  # (a directory changes through what it holds)
                self.trust.from_remote(node, e.path, self.invalidator)
            if changed and not first_time:
                self.invalidator.inode(node.ino, attr_only=node.open_count > 0)
            elif shown != (node.mode, node.mtime_ns) and not first_time:
                self.invalidator.inode(node.ino, attr_only=True)
        if (
            first_time
            and (d.lookups or d.parent is None)
            and any(c.is_dir for c in d.children.values())
        ):
            self.invalidator.inode(d.ino, attr_only=True)  # its nlink is known now
        complete = self.remote.capabilities.complete_listing
        for name, node in list(d.children.items()):
            if name in seen or self.busy(node):
                continue
            if self.journal.touches(node.path) or self.gens.stale_for(node.path, stamp):
                continue
            if not complete and _left_out(node):
                continue  # (the listing leaves such files out: not gone)
            if node.is_dir and any(self._in_use(n, stamp) for n in below(node)):
                self._merge_listing(node, [], stamp, times)  # (a Sentry replace's moment)
                continue  # the file in use keeps its name; what else it held is gone
            self.attrs.removed(node.path)
            self.inodes.detach(node)  # gone on the remote
            self.invalidator.entry(d.ino, name, node.ino)
            named = True
        if named and not first_time:
            # Names changed elsewhere: its m/ctime say so (Python's imports look), not atime
            d.keep_atime()
            d.mtime_ns = d.ctime_ns = time.time_ns()
            self.invalidator.inode(d.ino, attr_only=True)
        if self.leftover:
            lay_leftovers(self, d, self.leftover)
        return True

    def _in_use(self, n: Node, stamp: int) -> bool:  # (or changed by us since `stamp`)
        return self.busy(n) or self.journal.touches(n.path) or self.gens.stale_for(n.path, stamp)

    def busy(self, node: Node) -> bool:
        """Local state the remote has not seen must not be replaced by a listing; nor
        may an open file's base move under it (its next write continues the content it
        opened, so it must still be checked against the version that content came
        from: a change made elsewhere meanwhile is a conflict, not overwritten)."""
        return (
            (self.files.get(node.ino) is not None and node.ino not in self.adopting)
            or self.files.dirty(node.ino)
            or self.overlay.pending_blob(node.ino) is not None
            or node.ino in self.journaling_attrs
            or node.local
            or local_only(node)
        )

    def on_remote(self, node: Node) -> bool:
        """Whether the remote has the name (for a directory: anything below it), or
        may have it: a file whose change is on its way (its round began). A change of
        the path on its way is this file's only if the journal still has a file there
        once its records apply: after a pending delete (or rename away) of the path,
        what is there now is a new file made here, which the remote has not seen."""
        if not node.is_dir:
            if node.base != Expect.ABSENT:
                return True
            return (
                self.flusher.sending(node.path)
                and self.journal.exists_after(node.path) is not False
            )
        if node.on_remote:
            return True
        return any(  # a directory made here holds files the remote may have
            not c.is_dir
            and not c.local
            and (c.base != Expect.ABSENT or self.journal.touches(c.path))
            for c in below(node)
        )


UNLISTED_RETRY = 2.0  # seconds between tries to list a directory first used offline


def _left_out(node: Node) -> bool:
    """A file no listing ever showed (written here, or found by name), or a directory
    holding one: where listings leave some files out, its absence says nothing."""
    return any(n.kind == "file" and not n.listed for n in chain((node,), below(node)))


def _time_ns(e: Entry, times: dict[int, int]) -> int:
    """The entry's modification time, exactly as listed (now, where the remote has none).
    Files written by one commit share their time: one int for them all (of the first
    SHARED_TIMES_MAX times of a listing), where each was 36 bytes of its own."""
    listed = e.time_ns()
    if listed is None:
        return time.time_ns()
    shared = times.get(listed)
    if shared is not None:
        return shared
    if len(times) < SHARED_TIMES_MAX:
        times[listed] = listed
    return listed


SHARED_TIMES_MAX = 4096
