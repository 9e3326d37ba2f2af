"""Generations: what of ours a listing in flight cannot have seen (listing.py says why).

Every applied change of ours records a generation for the paths it touched, and every
repo head we learn of gets one when first seen. A listing is stamped with its head's
generation when that head is known, else with the generation current when its request
started; a path one of our changes touched after that stamp is left alone by its merge.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from repomount import paths

MEMORY = 1 << 16  # entries kept of each map: an answer older than the oldest is not expected


class Generations:
    def __init__(self) -> None:
        self.generation = 0
        # path -> generation of our last change there; head -> generation first seen
        self._touched_at: OrderedDict[str, int] = OrderedDict()
        self._head_gen: OrderedDict[str, int] = OrderedDict()
        # (path, version) of our recent writes: the feed brings them back, maybe after
        # a newer write of ours landed too, and they need no re-listing then.
        self._ours: OrderedDict[str, set[str]] = OrderedDict()  # path -> versions
        self._our_heads: OrderedDict[str, None] = OrderedDict()  # heads our commits made

    def touched_by_us(self, head: str | None, *changed: str, version: str | None = None) -> None:
        """One of our changes landed at these paths, making the repo's head `head`
        (called by the applier; `version`: what the last of them holds now). Every
        change of one commit shares its generation."""
        self.ours_from_before(head, *changed, version=version)
        gen = self._head_gen.get(head) if head is not None else None
        if gen is None:
            self.generation += 1
            gen = self.generation
            self._see_head(head, gen)
        for p in changed:
            _bounded_put(self._touched_at, p, gen)

    def ours_from_before(self, head: str | None, *changed: str, version: str | None = None) -> None:
        """One of our changes that landed before this mount listed anything (at `head`,
        an older head than those seen since): ours when the feed brings it back, but
        no listing of ours can have missed it, so it takes no generation."""
        if version is not None:
            ours = self._ours.pop(changed[-1], set())
            ours.add(version)
            self._ours[changed[-1]] = ours
            if len(self._ours) > MEMORY:
                self._ours.popitem(last=False)
        if head is not None:
            _bounded_put(self._our_heads, head, None)

    def observe_head(self, head: str | None) -> None:
        """A head the remote reported (info, a listing): later than all we knew."""
        if head is not None and head not in self._head_gen:
            self.generation += 1
            self._see_head(head, self.generation)

    def stamp(self, head: str | None, started: int) -> int:
        """A listing's stamp: its head's generation where known, else `started` (the
        generation when its request started)."""
        known = self._head_gen.get(head) if head is not None else None
        return started if known is None else known

    def stale_for(self, path: str, stamp: int) -> bool:
        """Whether a change of ours at `path` or above it landed after `stamp`."""
        if not self._touched_at:
            return False
        p: str | None = path
        while p is not None:
            if self._touched_at.get(p, -1) > stamp:
                return True
            p = paths.parent_of(p) if p else None
        return False

    def ours(self, path: str, version: str) -> bool:
        """Whether we wrote `version` at `path` recently."""
        return version in self._ours.get(path, ())

    def made_by_us(self, head: str) -> bool:
        """Whether one of our recent commits made the repo's head `head`."""
        return head in self._our_heads

    def not_ours(self, path: str) -> None:
        """Someone else wrote `path`: versions we wrote there before are theirs now too."""
        self._ours.pop(path, None)

    def _see_head(self, head: str | None, gen: int) -> None:
        if head is not None:
            _bounded_put(self._head_gen, head, gen)


def _bounded_put(table: OrderedDict[str, Any], key: str, gen: int | None) -> None:
    table[key] = gen
    table.move_to_end(key)
    if len(table) > MEMORY:
        table.popitem(last=False)
