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
import shutil
from pathlib import Path

from repomount import paths
from repomount.remotes.base import Expect, ExpectT, RemoteError
from repomount.vfs.coalesce import Planned
from repomount.vfs.conflicts import conflict_name
from repomount.vfs.errors import FsError
from repomount.vfs.fileio import FileIO
from repomount.vfs.nodes import Node
from repomount.vfs.records import Record
from repomount.vfs.state import local_only

log = logging.getLogger(__name__)


class LostConflicts(FileIO):
    def _lineage_node(self, where: str, olds: set[ExpectT]) -> Node | None:
        """The file at `where` if it still carries the content that lost (its base is
        still what the lost change expected), else None."""
        node = self.node_at(where)
        if node is None or node.kind != "file" or node.local:
            return None
        return node if node.base in olds or Expect.ANY in olds else None

    def _later_lineage(self, op: Planned, olds: set[ExpectT]) -> list[Record]:
        """Closes journaled at the same name since the change that lost: they carry
        its lineage (and expect what it expected)."""
        return [
            r
            for r in self.journal.naming(op.path)
            if r.id > max(op.ids, default=0)
            and r.op == "write"
            and r.path == op.path
            and r.state == "pending"
            and r.expect in olds
        ]

    def _lineage_lost(self, node: Node, what: str) -> None:
        """The content of `node` lost a conflict: the descriptors open on it hear it at
        their next fsync (fileio.py)."""
        if node.open_count > 0:
            count, _ = self.lost_lineage.get(node.ino, (0, ""))
            self.lost_lineage[node.ino] = (count + 1, what)

    def _free_copy_name(self, where: str) -> str:
        """A conflict copy's name nothing has (two conflicts in one second: `-2`...)."""
        n = 1
        while True:
            copy = conflict_name(where, n=n)
            parent = self.node_at(paths.parent_of(copy))
            name = copy.rsplit("/", 1)[-1]
            taken = parent is not None and parent.children is not None and name in parent.children
            if not taken and not self.journal.touches(copy):
                return copy
            n += 1

    async def keep_as_copy(self, op: Planned, olds: set[ExpectT]) -> tuple[str, int]:
        """Journal the local lineage of `op` (a write that lost; policy keep-both) as a
        conflict copy next to the file (wherever a pending rename of its directory
        put it), show it there, and complete the rows that lost, all in one
        transaction. Returns the copy's path and the id of its newest record."""
        assert op.blob is not None
        async with self.ns_lock:
            where = self.journal.name_after(op.path, max(op.ids, default=0)) or op.path
            node = self._lineage_node(where, olds)
            if node is None:
                return self._journal_copy(op, where, olds, None)
            async with self.node_lock(node.ino):
                return self._journal_copy(op, where, olds, node)

    def _journal_copy(
        self, op: Planned, where: str, olds: set[ExpectT], node: Node | None
    ) -> tuple[str, int]:
        assert op.blob is not None
        copy = self._free_copy_name(where)
        # Later closes of the lineage go to the copy too, so no second conflict (and
        # copy) follows. (Not when a rename of the directory came between: their rows
        # name the old place, and sent before that rename they would land there.)
        later = self._later_lineage(op, olds) if where == op.path else []
        with self.journal.transaction():  # (a crash never leaves both, or neither)
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
            self.journal.complete(op.ids)
        self.flusher.notify()
        parent = self.node_at(paths.parent_of(copy))
        name = copy.rsplit("/", 1)[-1]
        if parent is None or parent.children is None:
            return copy, copy_id  # (not loaded here: a listing shows it)
        if node is not None:
            self._lineage_lost(node, f"{where} changed on the remote; kept as {copy}")
        if node is not None and node.parent is parent:
            old_name = node.name
            self.attrs.moved(where, copy)
            self.inodes.move(node, parent, name)
            node.base, node.version, node.fetch_path = Expect.ABSENT, None, None
            node.on_remote = False
            if self.overlay.pending_blob(node.ino) is None:
                self.overlay.set_pending_blob(node.ino, newest)
            self._touch_dir(parent)
            self.invalidator.entry(parent.ino, old_name)
            self.invalidator.entry(parent.ino, name)
            return copy, copy_id
        size = self.journal.blob_path(newest).stat().st_size
        shown = self.inodes.new_node(parent, name, "file", size=size)
        self._own(shown, None)
        self.overlay.set_pending_blob(shown.ino, newest)
        return copy, copy_id

    async def keep_dir_as_copy(self, op: Planned) -> str | None:
        """A rename of a directory that lost (another client made its new name first):
        the files it carried may hold content never sent, and a change made at the old
        name since is another file, so the rename cannot just be dropped. It goes to a
        conflict copy's name next to the new one instead (still pending), with the
        later changes made in the directory, until one moves it away. Returns that name;
        None when `op` is no rename of a directory (a file's rename names its version)."""
        if op.op != "rename" or op.dst is None or len(op.ids) != 1:
            return None
        async with self.ns_lock:
            rec = self.journal.get(op.ids[0])
            if rec is None or rec.op != "rename" or rec.dst is None:
                return None
            if not self._moved_a_directory(rec):
                return None  # (a file: its version was checked, the remote's stands)
            copy = self._free_copy_name(rec.dst)
            with self.journal.transaction():
                later = self.journal.added_after(rec.id)
                self.journal.update(rec, dst=copy, expect_to=Expect.ABSENT)
                now = self._follow_to_copy(later, rec.dst, copy)
            self.flusher.notify()
            if now is not None:
                self._show_moved(*now)
            return copy

    async def move_dir_aside(self, top: str, refused: int) -> str | None:
        """A directory of ours at `top` whose name another client took with a file (or
        symlink) meanwhile: its changes could only be refused, round after round (a file
        cannot go below a file), and the content they carry shown nowhere. The changes
        made in it since it was last made there, before the refused record `refused`,
        go to a conflict copy's name beside it instead (and where later records move it,
        `mkdir d; ...; mv d e`, they move it from there), and the directory moves there
        in the mount. Returns that name; None when no change of ours lies there."""
        async with self.ns_lock:
            records = self.journal.records()
            start = 0  # (after the last delete or move of `top` before the refused
            # change: an earlier directory; a later one moved this directory on)
            for k, r in enumerate(records):
                if r.id >= refused:
                    break
                if r.op in ("delete", "rename") and paths.at_or_under(top, r.path):
                    start = k + 1
            mine = records[start:]
            if not any(paths.at_or_under(p, top) for r in mine for p in r.paths()):
                return None
            copy = self._free_copy_name(top)
            with self.journal.transaction():
                now = self._follow_to_copy(mine, top, copy)
            self.flusher.notify()
            if now is not None:
                self._show_moved(*now)
            return copy

    def _follow_to_copy(self, records: list[Record], top: str, copy: str) -> tuple[str, str] | None:
        """Rename `top` to `copy` in `records` (oldest first), following the directory
        where later records move it, until one moves it away or deletes it (what is
        made at its name afterwards is another's). Held ones among them go again. Where
        the directory is now and where it goes, or None once it is gone."""
        cur: str | None = top  # its name as the records apply
        new = copy
        for r in records:
            if cur is None:
                break
            changes: dict[str, str | None] = {
                field: new + p[len(cur) :]
                for field, p in (("path", r.path), ("dst", r.dst))
                if p is not None and paths.at_or_under(p, cur)
            }
            if changes and r.state == "held":
                changes.update(state="pending", held_for=None)
            if changes:
                self.journal.update(r, **changes)
            if r.op == "rename" and r.dst is not None and r.path == cur:
                cur = None  # moved away: what is made at its name is another's
            elif r.op == "rename" and r.dst is not None and cur.startswith(r.path + "/"):
                cur, new = r.dst + cur[len(r.path) :], r.dst + new[len(r.path) :]
            elif r.op == "delete" and paths.at_or_under(cur, r.path):
                cur = None
        return None if cur is None else (cur, new)

    def _moved_a_directory(self, rec: Record) -> bool:
        """Whether the rename `rec` moved a directory: what is at its new name now
        (wherever later renames took it) says; when a later change removed it, its
        record does (a directory's expects any version, a file's names one, unless
        its listing named none)."""
        assert rec.dst is not None
        now = self.journal.name_after(rec.dst, rec.id)
        node = self.node_at(now) if now is not None else None
        if node is not None:
            return node.is_dir
        return rec.expect is Expect.ANY

    def _show_moved(self, old: str, new: str) -> None:
        node = self.node_at(old)
        parent = self.node_at(paths.parent_of(new))
        if node is None or not node.is_dir or parent is None or parent.children is None:
            return  # (not loaded here: a listing shows it)
        old_parent, old_name = node.parent, node.name
        self.attrs.moved(old, new)
        self.inodes.move(node, parent, new.rsplit("/", 1)[-1])
        for p in {old_parent, parent}:
            if p is not None:
                self._touch_dir(p)
        if old_parent is not None:
            self.invalidator.entry(old_parent.ino, old_name)
        self.invalidator.entry(parent.ino, node.name)

    async def set_aside_lineage(self, op: Planned, olds: set[ExpectT], saved: Path) -> None:
        """Policy theirs: the local version that lost is saved at `saved`. Closes of its
        lineage journaled since replace it there (and are done: never sent to the
        name, which is the remote's); an inode of the lineage still open is unlinked,
        and what it holds at its close is saved there too."""
        assert op.blob is not None
        async with self.ns_lock:
            node = self._lineage_node(op.path, olds)
            if node is None:
                self._save_later(op, olds, saved)
                return
            async with self.node_lock(node.ino):
                newest = self._save_later(op, olds, saved)
                if self.overlay.pending_blob(node.ino) in (op.blob, newest):
                    self.overlay.set_pending_blob(node.ino, None)
                if node.open_count == 0 and self.files.get(node.ino) is None:
                    return  # not open: the name shows the remote's version again
                self._lineage_lost(node, f"{op.path} changed on the remote; saved to {saved}")
                parent = node.parent
                self.saved_lineage[node.ino] = saved
                self.attrs.removed(node.path)
                self.inodes.detach(node)
                if parent is not None:
                    self._touch_dir(parent)
                    self.invalidator.entry(parent.ino, node.name, node.ino)

    def _save_later(self, op: Planned, olds: set[ExpectT], saved: Path) -> str | None:
        later = self._later_lineage(op, olds)
        if not later or later[-1].blob is None:
            return None
        shutil.copyfile(self.journal.blob_path(later[-1].blob), saved)
        self.journal.complete(r.id for r in later)
        return later[-1].blob

    def content_materialized(self, old: str, new: str) -> None:
        """Edits made offline (blob `old`) were laid over their base as `new`: the
        file they belong to holds `new` as its pending content."""
        ino = self.overlay.owner_of(old)
        if ino is not None:
            self.overlay.set_pending_blob(ino, new)

    async def adopt_remote(
        self, path: str, blob: str | None = None, *, moved_here: bool = False
    ) -> None:
        """Show the remote's state of `path` again (after a conflict resolved for theirs).
        `blob`: the content that lost; a newer pending write of the file stays.
        `moved_here`: `path` is where a rename that was dropped took a file."""
        node = self.node_at(path)
        if node is not None:
            if moved_here and node.kind == "file":
                # Where listings leave some files out, one that no listing showed since
                # it was written is kept when the listing lacks it (complete_listing);
                # but the remote never had it here, as its rename did not happen: the
                # listing decides, as for a listed file (a newer change of it stays).
                node.listed = True
            pending = self.overlay.pending_blob(node.ino)
            if blob is None and pending is not None and self.journal.uses_blob(pending):
                pass  # a write after the change that lost (`mv a b; echo x > b`) stays
            elif blob is None or pending == blob:
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
