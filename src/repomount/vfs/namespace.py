"""Namespace operations: lookup, directories, create, unlink, rename, symlinks.

Each change decides under `ns_lock` and journals before it returns. A decision that
needs a directory listed raises NeedListing; `_decide` then lists without the lock and
decides again from scratch, so nothing seen before an await is trusted after it.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from repomount import paths
from repomount.remotes.base import Expect
from repomount.vfs.errors import FsError, exists, not_found
from repomount.vfs.forgetting import Forgetting
from repomount.vfs.nodes import DEFAULT_DIR_MODE, DEFAULT_FILE_MODE, MODE_BITS, Node, child_path
from repomount.vfs.state import DirHandle, Handle, NeedListing, is_ancestor

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

T = TypeVar("T")


class _NeedOwnBlob(Exception):
    """Raised under ns_lock: `node` needs a blob of its own before it can change sides
    between local-only and ordinary (see _prepare_local_switch)."""

    def __init__(self, node: Node) -> None:
        super().__init__(node.path)
        self.node = node


class Namespace(Forgetting):
    async def _decide(self, decide: Callable[[set[int], set[str]], Awaitable[T]]) -> T:
        """Run `decide(just_listed, own_blobs)` under ns_lock; what it needs awaited
        (a listing, a content copy) happens without the lock, then it decides again."""
        just_listed: set[int] = set()
        own_blobs: set[str] = set()
        while True:
            async with self.ns_lock:
                try:
                    return await decide(just_listed, own_blobs)
                except NeedListing as need:
                    wanted, copy_for = need.node, None
                except _NeedOwnBlob as need:
                    wanted, copy_for = None, need.node
            if wanted is not None:
                await self.listed(wanted)
                just_listed.add(wanted.ino)
            if copy_for is not None:
                own_blobs.add(await self._own_blob(copy_for))

    def _own(self, node: Node, owner: tuple[int, int] | None) -> None:
        """A node made by a request belongs to whoever asked (allow_other mounts)."""
        node.uid, node.gid = owner if owner is not None else (self.config.uid, self.config.gid)
        if (node.uid, node.gid) != (self.config.uid, self.config.gid):
            self.attrs.remember(node, uid=node.uid, gid=node.gid)

    def _keep_mode(self, node: Node) -> None:
        """The mode a directory or file was made with (`mkdir -m 700`, `open(O_CREAT,
        0600)`) is kept as a chmod's is, where the remote does not keep it: not kept, a
        remount would show the listing's default instead."""
        if node.is_dir:
            if node.mode != DEFAULT_DIR_MODE:
                self.attrs.remember(node, mode=node.mode)
        elif not self.remote.capabilities.file_modes and node.mode != DEFAULT_FILE_MODE:
            self.attrs.remember(node, mode=node.mode)

    def _touch_dir(self, d: Node) -> None:
        d.mtime = time.time()
        d.ctime = d.mtime

    # ------------------------------------------------------------------ lookup

    async def lookup(self, parent_ino: int, name: str) -> Node:
        if name in (".", ".."):
            raise FsError(errno.ENOENT)  # the kernel resolves these itself
        if len(os.fsencode(name)) > paths.MAX_NAME_BYTES:
            raise FsError(errno.ENAMETOOLONG)
        parent = self.node(parent_ino)
        node = (await self.listed(parent)).get(name)
        if node is None:
            raise not_found(child_path(parent, name))
        node.lookups += 1
        return node

    def note_lookup(self, node: Node) -> None:
        """The kernel got a reference to `node` some other way (readdirplus)."""
        node.lookups += 1

    # ------------------------------------------------------------------ directories

    async def opendir(self, ino: int) -> int:
        node = self.node(ino)
        children = await self.listed(node, walk=True)
        if ino in self.unlisted:  # (names can be made in it, but its list is unknown)
            raise FsError(errno.EIO, f"{node.path or '/'}: never listed, and the remote is away")
        self.prefetch.dir_read(ino)
        fh = self.new_fh()
        self.dirs[fh] = DirHandle(node, sorted(children))
        return fh

    async def rewinddir(self, fh: int) -> None:
        """Before a read from offset 0: if entries were read already (`rewinddir`, a
        seek to 0), the stream shows the directory as it is now, as a new opendir
        would (POSIX)."""
        dh = self.dirs[fh]
        if not dh.read:
            return
        dh.names = sorted(await self.listed(dh.node))
        dh.read = False

    def readdir(self, fh: int, start: int) -> Iterator[tuple[int, str, Node, bool]]:
        """(next_id, name, node, counts_as_lookup) from offset `start`: "." and "..",
        then the snapshot taken at opendir (or at a rewind). Names removed since are
        skipped, so offsets never skip or repeat a living entry."""
        dh = self.dirs[fh]
        dh.read = True
        dots = [(".", dh.node), ("..", dh.node.parent or dh.node)]
        for i in range(start, 2):
            yield i + 1, dots[i][0], dots[i][1], False
        children = dh.node.children or {}
        for i in range(max(start - 2, 0), len(dh.names)):
            node = children.get(dh.names[i])
            if node is not None:
                yield i + 3, dh.names[i], node, True

    def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    def _child(self, parent: Node, name: str, just_listed: set[int]) -> Node:
        node = self.listed_locked(parent, just_listed).get(name)
        if node is None:
            raise not_found(child_path(parent, name))
        return node

    async def mkdir(
        self, parent_ino: int, name: str, mode: int, owner: tuple[int, int] | None = None
    ) -> Node:
        parent = self.node(parent_ino)
        path = self.valid_child_path(parent, name)

        async def decide(just_listed: set[int], _: set[str]) -> Node:
            if name in self.listed_locked(parent, just_listed):
                raise exists(path)
            journaled = self.remote.capabilities.empty_dirs
            if journaled:  # (first: if the journal cannot take it, nothing is made)
                self.journal_add("mkdir", path)
            node = self.inodes.new_node(parent, name, "dir", mode=mode & MODE_BITS)
            self._own(node, owner)
            self._keep_mode(node)
            node.on_remote = journaled  # the journal now speaks for it
            node.lookups += 1
            self.fresh[node.ino] = True
            self._touch_dir(parent)
            return node

        return await self._decide(decide)

    async def symlink(
        self, parent_ino: int, name: str, target: str, owner: tuple[int, int] | None = None
    ) -> Node:
        parent = self.node(parent_ino)
        path = self.valid_child_path(parent, name)

        async def decide(just_listed: set[int], _: set[str]) -> Node:
            if name in self.listed_locked(parent, just_listed):
                raise exists(path)
            self.require("symlinks", path)
            if not target or len(os.fsencode(target)) > paths.MAX_PATH_BYTES:
                raise FsError(errno.ENAMETOOLONG if target else errno.ENOENT)
            try:
                target.encode("utf-8")
            except UnicodeEncodeError:  # (bytes that are not UTF-8: remote targets are text)
                raise FsError(errno.EINVAL, f"{path!r}: the link's target is not UTF-8") from None
            self.journal_add("symlink", path, target=target, expect=Expect.ABSENT)
            node = self.inodes.new_node(
                parent, name, "symlink", mode=0o777, size=len(os.fsencode(target)), target=target
            )
            self._own(node, owner)
            node.lookups += 1
            self._touch_dir(parent)
            return node

        return await self._decide(decide)

    def readlink(self, ino: int) -> str:
        node = self.node(ino)
        if node.kind != "symlink" or node.target is None or node.link_as_file:
            raise FsError(errno.EINVAL)
        return node.target

    async def rmdir(self, parent_ino: int, name: str) -> None:
        parent = self.node(parent_ino)

        async def decide(just_listed: set[int], _: set[str]) -> None:
            node = self._child(parent, name, just_listed)
            if not node.is_dir:
                raise FsError(errno.ENOTDIR)
            if self.listed_locked(node, just_listed):
                raise FsError(errno.ENOTEMPTY)
            if node.on_remote and self.remote.capabilities.empty_dirs:
                self.journal_add("delete", node.path)
            self.attrs.removed(node.path)
            self.inodes.detach(node)
            node.ctime = time.time()
            self._touch_dir(parent)
            self._keep_if_emptied(parent)

        await self._decide(decide)

    # ------------------------------------------------------------------ files

    async def create(
        self,
        parent_ino: int,
        name: str,
        mode: int,
        flags: int,
        owner: tuple[int, int] | None = None,
    ) -> tuple[int, Node]:
        parent = self.node(parent_ino)
        path = self.valid_child_path(parent, name)
        self.check_file_name(path, name)

        existed = False

        async def decide(just_listed: set[int], _: set[str]) -> Node:
            nonlocal existed
            old = self.listed_locked(parent, just_listed).get(name)
            if old is not None:
                if flags & os.O_EXCL:
                    raise exists(path)
                if old.is_dir:
                    raise FsError(errno.EISDIR)
                node = old  # a race with a listing can land here: an ordinary open
                existed = True
            else:
                node = self.inodes.new_node(parent, name, "file", mode=mode & MODE_BITS, size=0)
                self._own(node, owner)
                self._keep_mode(node)
                node.local = self.is_local_name(name)
                self._touch_dir(parent)
            node.lookups += 1
            node.open_count += 1  # held from here, so no listing or forget drops it
            return node

        node = await self._decide(decide)
        if existed:  # O_CREAT of a name that exists: open(2) semantics, O_TRUNC included
            node.open_count -= 1
            fh, _ = await self.open(node.ino, flags)  # type: ignore[attr-defined]
            return fh, node
        fh = self.new_fh()
        self.handles[fh] = Handle(fh, node, writable=True)
        try:
            await self.truncate_content(node)  # type: ignore[attr-defined]
        except BaseException:
            del self.handles[fh]
            node.open_count -= 1
            raise
        node.atime_ns = None  # (a new file: its three times are its creation's)
        return fh, node

    async def unlink(self, parent_ino: int, name: str) -> None:
        parent = self.node(parent_ino)

        async def decide(just_listed: set[int], _: set[str]) -> None:
            node = self._child(parent, name, just_listed)
            if node.is_dir:
                raise FsError(errno.EISDIR)
            if not node.local and self.on_remote(node):
                self.require("delete", node.path)
            if not node.local and self._sent_or_pending(node):
                self.journal_add("delete", node.path, expect=node.base)
            self._remove_name(node)
            self._touch_dir(parent)
            self._keep_if_emptied(parent)

        await self._decide(decide)

    def _keep_if_emptied(self, d: Node) -> None:
        """Where directories exist only through their files, a directory whose last
        entry we removed would vanish at its next listing (the remote has nothing below
        it any more), and so would a directory above it holding nothing else: `ls` of
        it said ENOENT, and so did a create in it by a process working there. Such a
        directory is the mount's own again, as a new one is, until a file of it lands
        (core._on_remote_above) or it is removed."""
        if self.remote.capabilities.empty_dirs:
            return
        while (
            d.parent is not None
            and d.on_remote
            and d.children is not None
            and all(c.is_dir and not c.on_remote for c in d.children.values())
        ):
            d.on_remote = False
            d = d.parent

    def _sent_or_pending(self, node: Node) -> bool:
        """Whether the remote has this node's name, or a pending change gives it one. A
        pending delete of an earlier file of the same name does not count."""
        if node.base != Expect.ABSENT:
            return True
        return bool(self.journal.exists_after(node.path))

    def _remove_name(self, node: Node) -> None:
        """`node` loses its name; its content stays readable by open handles."""
        self.attrs.removed(node.path)
        self.inodes.detach(node)
        node.ctime = time.time()  # (its link count changed: fstat of a handle shows it)
        if node.local:
            self.overlay.drop_local_blob(node.ino)
        else:
            self.overlay.set_pending_blob(node.ino, None)

    async def rename(
        self, old_parent_ino: int, old: str, new_parent_ino: int, new: str, flags: int
    ) -> None:
        if flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "RENAME_EXCHANGE is not supported")
        if flags & ~RENAME_NOREPLACE:  # RENAME_WHITEOUT (overlayfs): no remote keeps one
            raise FsError(errno.EINVAL, f"rename flags {flags:#x} are not supported")
        src_parent = self.node(old_parent_ino)
        dst_parent = self.node(new_parent_ino)
        dst_path = self.valid_child_path(dst_parent, new)

        async def decide(just_listed: set[int], own_blobs: set[str]) -> None:
            node = self._child(src_parent, old, just_listed)
            target = self.listed_locked(dst_parent, just_listed).get(new)
            if target is node:
                return
            if not node.is_dir:
                self.check_file_name(dst_path, new)
            if node.is_dir and is_ancestor(node, dst_parent):
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            if target is not None:
                if flags & RENAME_NOREPLACE:
                    raise exists(dst_path)
                if target.is_dir:
                    if not node.is_dir:
                        raise FsError(errno.EISDIR)
                    if self.listed_locked(target, just_listed):
                        raise FsError(errno.ENOTEMPTY)
                elif node.is_dir:
                    raise FsError(errno.ENOTDIR)
            if node.is_dir:
                deepest = self._check_subtree_loaded(node, just_listed)
                size = len(dst_path.encode("utf-8")) + deepest
                if size > paths.MAX_PATH_BYTES:  # (the server would keep paths no one lists)
                    raise FsError(
                        errno.ENAMETOOLONG,
                        f"{dst_path!r}: a path below it would be {size} bytes long,"
                        f" the limit is {paths.MAX_PATH_BYTES}",
                    )
            switching = node.local != (not node.is_dir and self.is_local_name(new))
            self._check_remote_can(node, new)  # before any copy is made for it
            if switching and not self.files.dirty(node.ino):
                blob = self.overlay.pending_blob(node.ino)
                if blob is None or (blob not in own_blobs and not node.local):
                    raise _NeedOwnBlob(node)
            self._rename_locked(node, target, dst_parent, new, dst_path)

        await self._decide(decide)

    def _check_subtree_loaded(self, d: Node, just_listed: set[int]) -> int:
        """Before a directory moves, know everything below it: once renamed locally, its
        old remote path can no longer be listed under the new name. Returns the length
        in bytes of the longest path below it, relative to it ("/a/b": 4), so that a
        rename that would take a path below past the limit is refused."""
        deepest = 0
        stack = [(d, 0)]
        while stack:
            n, size = stack.pop()
            if n.children is None or (n.on_remote and not self.authoritative(n)):
                children = self.listed_locked(n, just_listed)
            else:
                children = n.children
            for name, c in children.items():
                below = size + 1 + len(name.encode("utf-8", "surrogateescape"))
                deepest = max(deepest, below)
                if c.is_dir:
                    stack.append((c, below))
        return deepest

    def _check_remote_can(self, node: Node, new: str) -> None:
        """Refuse a rename the remote cannot carry out (EPERM) before changing anything."""
        dst_local = not node.is_dir and self.is_local_name(new)
        if self.on_remote(node) and not node.local:  # to a local-only name, it goes remotely
            self.require("delete" if dst_local else "rename", node.path)

    def _rename_locked(
        self, node: Node, target: Node | None, dst_parent: Node, new: str, dst_path: str
    ) -> None:
        src_path = node.path
        on_remote = self.on_remote(node)
        dst_local = not node.is_dir and self.is_local_name(new)
        self._check_remote_can(node, new)
        known = on_remote or self._sent_or_pending(node)
        becomes_ordinary = node.local and not dst_local
        replaced_dir = target is not None and target.is_dir and target.on_remote
        # What the remote holds at the new name before our pending changes land.
        dst_base = target.base if target is not None and not target.is_dir else Expect.ABSENT
        # Journaled first, in one transaction: if the journal cannot take it all (its
        # disk full), nothing changes.
        with self.journal.transaction():
            if replaced_dir and self.remote.capabilities.empty_dirs:
                assert target is not None
                self.journal_add("delete", target.path)
            if node.local or dst_local:
                if not node.local and known:  # an ordinary file becomes local-only
                    self.journal_add("delete", src_path, expect=node.base)
            elif known:
                expect = Expect.ANY if node.is_dir else node.base
                self.journal_add(
                    "rename", src_path, dst=dst_path, expect=expect, expect_to=dst_base
                )
            if becomes_ordinary and not self.files.dirty(node.ino):
                # Still being written: its close journals it under the new name; else
                # send the content it has now.
                blob = self.overlay.pending_blob(node.ino)
                assert blob is not None  # rename's decide made sure
                self.journal_write(node, blob, dst_base, at=dst_path)
        if node.local or dst_local:
            if not node.local:  # an ordinary file becomes local-only (vim's backup)
                node.local, node.base = True, Expect.ABSENT
            elif not dst_local:  # a local-only file becomes an ordinary name
                node.local, node.base = False, dst_base
        elif known:
            if not node.is_dir:
                node.base = dst_base
        elif target is not None and not target.is_dir:
            # A file that exists only here replaces a remote one: its upload must
            # replace exactly the version being renamed over.
            node.base = dst_base
        if target is not None:
            self._remove_name(target)
        old_parent = node.parent
        self.attrs.moved(src_path, dst_path)
        self.inodes.move(node, dst_parent, new)
        assert old_parent is not None
        self._touch_dir(old_parent)
        self._touch_dir(dst_parent)
        self._keep_if_emptied(old_parent)
        node.ctime = time.time()
        for link in self.trust.links_leaving(node):  # as a listing there would show them
            parent, name = link.parent, link.name
            assert parent is not None
            self.inodes.renewed(link, link_as_file=True)
            # Until the kernel drops the name (a queued invalidation), it may follow
            # the old inode: its readlink answers EINVAL from now on.
            link.target = None
            self.invalidator.entry(parent.ino, name, link.ino)

    async def _own_blob(self, node: Node) -> str:
        """Give a file that turns local-only (or back) a blob of its own holding its
        current content: the journal may send and delete the one it has. Returns the
        blob's name (the caller's decision checks it is still the file's)."""
        before = self.overlay.pending_blob(node.ino)
        blob: str = await self.content_to_new_blob(node)  # type: ignore[attr-defined]
        if self.overlay.pending_blob(node.ino) != before or self.files.dirty(node.ino):
            # Written or closed meanwhile: this copy is stale; the decision asks again.
            self.journal.blob_path(blob).unlink(missing_ok=True)
            return ""
        self.overlay.set_pending_blob(node.ino, blob)
        return blob
