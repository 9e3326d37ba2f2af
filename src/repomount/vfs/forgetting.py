"""Forgetting: parts of the tree nobody uses are dropped from memory and listed again
when next needed, so memory is bounded by what is in use, not by what was ever listed."""

from __future__ import annotations

import logging

import trio

from repomount.vfs.listing import Listings
from repomount.vfs.nodes import Node

log = logging.getLogger(__name__)


class Forgetting(Listings):
    async def sweep_forever(self, every: float = 30.0) -> None:
        """Background task: sweep soon after the kernel forgot nodes, and every `every`
        seconds in any case (listings expire without telling anyone)."""
        last = trio.current_time()
        while True:
            await trio.sleep(5.0)
            if self.sweep_wanted or trio.current_time() - last >= every:
                self.sweep_wanted = False
                last = trio.current_time()
                dropped = self.sweep()
                if dropped:
                    log.debug("dropped %d unreferenced clean node(s)", dropped)

    def sweep(self) -> int:
        """Drop the listed children of every directory whose listing expired and whose
        whole subtree is clean and unreferenced (no kernel lookups, open files, open
        directory handles, pending changes or local-only files): memory is bounded by
        what is in use, not by what was ever listed. The directory is listed again when
        next needed. Returns how many nodes went.

        Not while the remote is away (or busy): a directory forgotten then could not be
        listed again, and would be one never listed (`ls` EIO, each name in it ENOENT,
        its cached files out of reach) until the remote answers. Nothing new is listed
        meanwhile, so memory does not grow."""
        if not self.health.usable:
            return 0
        # (nodes a listing removed that the kernel never held; a lock table holds only
        # locks in use, which go when released: state.py)
        for ino in [i for i in self._listed_gen if self.inodes.get(i) is None]:
            del self._listed_gen[ino]
        in_dirhandle = {dh.node.ino for dh in self.dirs.values()}
        made_here = self.trust.kept_in_memory(self.inodes.root)  # (a re-listing would differ)
        droppable: dict[int, bool] = {}
        order: list[Node] = []  # parents before children
        stack = [self.inodes.root]
        while stack:
            n = stack.pop()
            order.append(n)
            if n.children:
                stack.extend(n.children.values())
        for n in reversed(order):  # children before parents
            ok = (
                n.lookups == 0
                and n.open_count == 0
                and n.ino not in in_dirhandle
                and n.ino not in made_here
                and not self.busy(n)
                and not self.journal.touches(n.path)
            )
            if ok and n.children:
                ok = all(droppable[c.ino] for c in n.children.values())
            droppable[n.ino] = ok
        dropped = 0
        stack = [self.inodes.root]
        while stack:
            d = stack.pop()
            if not d.children:
                continue
            if (
                d.ino not in self.fresh
                and d.ino not in in_dirhandle
                and d.on_remote
                and not self.authoritative(d)
                and all(droppable[c.ino] for c in d.children.values())
            ):
                children = list(d.children.values())
                d.children, d.subdirs = None, 0
                for c in children:
                    for gone in self.inodes.drop_subtree(c):
                        self._listed_gen.pop(gone, None)
                        self.relist.discard(gone)
                        self.unlisted.pop(gone, None)
                        dropped += 1
            else:
                stack.extend(c for c in d.children.values() if c.is_dir)
        return dropped
