"""Tree walks seen from cold opens: a program walking a tree (tar, cp -r, grep -r,
git status) gets the small files below the walk's root read ahead in bulk
(prefetch.py decides when opens make a walk and fetches; this picks the root and the
files, from the tree the vfs shows)."""

from __future__ import annotations

import contextlib
import logging

from repomount.vfs.errors import FsError
from repomount.vfs.namespace import Namespace
from repomount.vfs.nodes import Node
from repomount.vfs.prefetch import SMALL_FILE, WALK_FILES, Candidate

log = logging.getLogger(__name__)


class Walks(Namespace):
    async def _read_ahead(self, node: Node, where: str, version: str) -> None:
        """A cold open: when it is part of a tree walk, queue the walk's small files
        for bulk reads (prefetch.py); wait for this file if its bulk read is in flight."""
        walk = self.prefetch.cold_open()
        root = self._walk_root(node)
        if root is None:  # (no directory read above it: opened by name, as git does)
            met = self.prefetch.opened_by_name(node.path)
            root = self.node_at(met) if met is not None else None
        elif not walk:
            root = None
        if root is not None and root.is_dir:
            walking = self.prefetch.walked_recently(root.ino)
            if not (walking and self.prefetch.busy()):
                if root.ino in self.alone:  # (what is below it is not listed yet)
                    with contextlib.suppress(FsError):  # (gone: what is known is read)
                        await self.listed(root, walk=True)
                queued = self.prefetch.queue(root.ino, self._walk_files(root))
                log.debug("reading ahead %d file(s) below %r", queued, root.path)
        await self.prefetch.wait(where, version)

    def _walk_root(self, node: Node) -> Node | None:
        """The highest directory of the unbroken chain of just-read directories above
        `node` (None when its own directory was not just read: not a walk)."""
        d = node.parent
        if d is None or not self.prefetch.recently_read(d.ino):
            return None
        while d.parent is not None and self.prefetch.recently_read(d.parent.ino):
            d = d.parent
        return d

    def _walk_files(self, root: Node) -> list[Candidate]:
        """Small clean files below `root` not cached yet, in the order a walker meets
        them (sorted names, depth first), within the read-ahead budget."""
        out: list[Candidate] = []
        budget = self.prefetch.walk_budget()
        stack = [iter(sorted((root.children or {}).items()))]
        while stack and budget > 0 and len(out) < WALK_FILES:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            n = entry[1]
            if n.is_dir:
                stack.append(iter(sorted((n.children or {}).items())))
            elif (
                n.kind == "file"
                and n.version is not None
                and 0 < n.size <= SMALL_FILE
                and not self.busy(n)
                and not self.cache.has(n.source, n.version)
            ):
                out.append(Candidate(n.source, n.version, n.size))
                budget -= n.size
        return out
