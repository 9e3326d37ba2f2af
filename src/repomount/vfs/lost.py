"""What the vfs does when a change of ours lost a conflict (the flusher's hooks).

The rule: a writer who lost never modifies the remote's version. The inode holding the
local lineage (the content that lost, and whatever was written on top of it since,
through descriptors still open) leaves the name to the remote's version:
- keep-both: the inode moves to the conflict copy's name, and the journal's later writes
  of the same lineage go there too; a descriptor open across the conflict writes on into
  the copy;
- theirs: the inode is unlinked (as by `rm` while open); what its descriptors still
  write is saved beside the local version that lost, in the state directory.
Then the name shows the remote's state again (`adopt_remote`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from repomount import paths
from repomount.remotes.base import Expect, ExpectT, RemoteError
from repomount.vfs.coalesce import Planned
from repomount.vfs.errors import FsError
from repomount.vfs.fileio import FileIO
from repomount.vfs.nodes import Node
from repomount.vfs.state import local_only

log = logging.getLogger(__name__)


class LostConflicts(FileIO):
    def _lineage_node(self, op: Planned, olds: set[ExpectT]) -> Node | None:
        """The file at `op.path` if it still carries the content that lost (its base is
        still what the lost change expected), else None."""
        node = self.node_at(op.path)
        if node is None or node.kind != "file" or node.local:
            return None
        return node if node.base in olds or Expect.ANY in olds else None

    def _in_use(self, node: Node, blob: str) -> bool:
        """Open, being written, or with newer closed content than the change that lost."""
        return (
            node.open_count > 0
            or self.files.get(node.ino) is not None
            or self.overlay.pending_blob(node.ino) not in (None, blob)
        )

    async def keep_as_copy(self, op: Planned, copy: str, olds: set[ExpectT], size: int) -> int:
        """Journal the local lineage of `op` (a write that lost; policy keep-both) under
        `copy`, and show it there. Returns the id of the copy's newest record."""
        assert op.blob is not None
        async with self.ns_lock:
            node = self._lineage_node(op, olds)
            if node is None:
                return self._journal_copy(op, copy, olds, None, size)
            async with self.node_lock(node.ino):
                return self._journal_copy(op, copy, olds, node, size)

    def _journal_copy(
        self, op: Planned, copy: str, olds: set[ExpectT], node: Node | None, size: int
    ) -> int:
        assert op.blob is not None
        # Closes since the change that lost carry the same lineage (and expect what it
        # expected): they go to the copy, so no second conflict (and copy) follows.
        later = [
            r
            for r in self.journal.naming(op.path)
            if r.id > max(op.ids, default=0)
            and r.op == "write"
            and r.path == op.path
            and r.state == "pending"
            and r.expect in olds
        ]
        for r in later:
            self.journal.update(r, path=copy, expect=Expect.ABSENT)
        if later:
            copy_id, newest = later[-1].id, later[-1].blob or op.blob
        else:
            copy_id = self.journal.add(
                "write", copy, blob=op.blob, mode=op.mode, mtime_ns=op.mtime_ns,
                expect=Expect.ABSENT,
            ).id  # fmt: skip
            newest = op.blob
        parent = self.node_at(paths.parent_of(copy))
        name = copy.rsplit("/", 1)[-1]
        if parent is None or parent.children is None or name in parent.children:
            return copy_id  # (not loaded here: a listing shows it)
        if node is not None and node.parent is parent:
            old_name = node.name
            self.attrs.moved(op.path, copy)
            self.inodes.move(node, parent, name)
            node.base, node.version, node.fetch_path = Expect.ABSENT, None, None
            node.on_remote = False
            if self.overlay.pending_blob(node.ino) is None:
                self.overlay.set_pending_blob(node.ino, newest)
            self._touch_dir(parent)
            self.invalidator.entry(parent.ino, old_name)
            self.invalidator.entry(parent.ino, name)
            return copy_id
        shown = self.inodes.new_node(parent, name, "file", size=size)
        self._own(shown, None)
        self.overlay.set_pending_blob(shown.ino, newest)
        return copy_id

    async def set_aside_lineage(self, op: Planned, olds: set[ExpectT], saved: Path) -> None:
        """Policy theirs: the local version that lost is saved at `saved`; an inode of
        its lineage still open is unlinked, and what it holds at its close is saved
        there too (never sent to the name, which is the remote's)."""
        assert op.blob is not None
        async with self.ns_lock:
            node = self._lineage_node(op, olds)
            if node is None or not self._in_use(node, op.blob):
                return
            async with self.node_lock(node.ino):
                parent = node.parent
                self.saved_lineage[node.ino] = saved
                self.attrs.removed(node.path)
                self.inodes.detach(node)
                if parent is not None:
                    self._touch_dir(parent)
                    self.invalidator.entry(parent.ino, node.name, node.ino)

    async def adopt_remote(self, path: str, blob: str | None = None) -> None:
        """Show the remote's state of `path` again (after a conflict resolved for theirs).
        `blob`: the content that lost; a newer pending write of the file stays."""
        node = self.node_at(path)
        if node is not None:
            if blob is None or self.overlay.pending_blob(node.ino) == blob:
                self.overlay.set_pending_blob(node.ino, None)
            f = self.files.get(node.ino)
            if f is not None and not f.dirty and node.open_count == 0:
                self.files.close(node.ino)
            if local_only(node):  # a create that lost: the remote has the name now
                node.base = Expect.ANY
        parent = self.node_at(paths.parent_of(path)) if path else None
        if parent is not None and parent.children is not None:
            self.expire(parent.ino)
            if node is not None:
                self.adopting.add(node.ino)  # (even while open: the name is theirs)
            try:
                async with self.dir_lock(parent.ino):
                    await self.refresh(parent)
            except (RemoteError, FsError) as e:
                log.warning("could not re-list %s: %s", parent.path or "/", e)
            finally:
                if node is not None:
                    self.adopting.discard(node.ino)
        if node is not None:
            self.invalidator.inode(node.ino, attr_only=node.open_count > 0)

