"""A remote's files held as one flat map of paths (a clone, a release's file list), and
the directories their paths imply: entries and listings of any directory, answered from
memory. Adapters whose service lists everything at once derive from it."""

from __future__ import annotations

from collections.abc import Iterable

from repomount.paths import ancestors_of
from repomount.remotes.base import Entry


class FileTree:
    """`children` maps every directory ("" the root) to its children's paths, in path
    order. A subclass says what a file's entry is (`file_entry`)."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.children: dict[str, list[str]] = {"": []}
        for path in sorted(paths):
            parent = ""
            for d in [*ancestors_of(path), path]:
                if d not in self.children:
                    self.children[parent].append(d)
                    if d != path:
                        self.children[d] = []
                parent = d

    def file_entry(self, path: str) -> Entry | None:
        """The entry of the file at `path`, or None when no file is there."""
        raise NotImplementedError

    def is_dir(self, path: str) -> bool:
        return path in self.children

    def entry(self, path: str) -> Entry | None:
        found = self.file_entry(path)
        if found is not None:
            return found
        return Entry(path, "dir") if self.is_dir(path) else None

    def listing(self, path: str, *, recursive: bool) -> list[Entry] | None:
        """Entries below directory `path`, or None when it is not one."""
        if not self.is_dir(path):
            return None
        found: list[Entry] = []
        pending = [path]
        while pending:
            for child in self.children[pending.pop()]:
                entry = self.entry(child)
                assert entry is not None
                found.append(entry)
                if recursive and entry.kind == "dir":
                    pending.append(child)
        return sorted(found, key=lambda e: e.path)
