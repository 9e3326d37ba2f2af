"""Relace's repository semantics over the store, as pure functions (no I/O).

A Relace repo is a git working tree: a set of files, directories exist only through the
files in them. An update is simulated on a snapshot of the store's entries in Relace's
three phases (all deletes, then all writes, then all renames, whatever the order sent),
and the difference between the snapshot and the result becomes store operations, each
guarded by what the snapshot saw: a commit that raced with another writer is refused as
a whole by the store, and the caller plans again on a fresh snapshot.

Contract: docs/remotes.md ("Relace", "The reference server's face").
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from repomount.paths import InvalidPathError, parent_of, shown, validate_path
from repomount.server.faces.seqtokens import SeqTokens
from repomount.server.names import control_character_problem, is_unicode
from repomount.server.store import ABSENT, PRESENT, Delete, Entry, Operation, Write

# --------------------------------------------------------------------------- errors


class RelaceError(Exception):
    """An answer in Relace's (FastAPI) error shape: `{"detail": str | [validation errors]}`."""

    def __init__(self, status: int, detail: str | list[dict[str, Any]]) -> None:
        super().__init__(detail if isinstance(detail, str) else "validation error")
        self.status = status
        self.detail = detail


def invalid(loc: Sequence[str | int], msg: str, kind: str, value: object = None) -> RelaceError:
    """A 422 as FastAPI writes it for a request that fails validation."""
    return RelaceError(422, [{"type": kind, "loc": list(loc), "msg": msg, "input": value}])


# --------------------------------------------------------------------------- paths


def normalize_path(raw: str, *, write: bool = False) -> str:
    """A file path as the service reads it (pydantic `Path`): `a//b` is `a/b`, `./a` is
    `a`, a trailing `/` goes. An empty path, a leading `/` or a `..` is a 400. A path
    that is not valid Unicode, or one to `write` that holds a control character
    (server/names.py), fails validation: 422."""
    if not is_unicode(raw):
        raise invalid(["body", "filename"], "Input is not valid Unicode", "string_unicode")
    if write and (problem := control_character_problem(raw)):
        raise invalid(["body", "filename"], f"Invalid path {shown(raw)}: {problem}", "value_error")
    if raw.startswith("/"):
        raise RelaceError(
            400, f"Invalid path {shown(raw)}: must be relative to the repository root"
        )
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    path = "/".join(parts)
    try:
        return validate_path(path)
    except InvalidPathError as error:
        raise RelaceError(400, f"Invalid path {shown(raw)}: {error.reason}") from None


# --------------------------------------------------------------------------- head tokens


_HEADS = SeqTokens(b"scramble", check_bytes=12)


def head_token(repo: str, head: int) -> str:
    """`repo_head`: 40 hex digits like a git commit id, derived from the store's head
    number so that no table is needed (server/faces/seqtokens.py)."""
    return _HEADS.token(repo, head)


def head_of_token(repo: str, token: str) -> int | None:
    """The store head a `repo_head` token names, or None when it is not one of ours."""
    return _HEADS.seq(repo, token)


# --------------------------------------------------------------------------- updates


@dataclass(frozen=True)
class DiffWrite:
    path: str
    blob: str  # the content, already in the blob store


@dataclass(frozen=True)
class DiffDelete:
    path: str  # a file, or a directory (recursively)


@dataclass(frozen=True)
class DiffRename:
    old: str  # a file only
    new: str


DiffOp = DiffWrite | DiffDelete | DiffRename


@dataclass(frozen=True)
class Plan:
    operations: list[Operation]  # for one store commit; empty when nothing changes
    changed_files: list[str]


@dataclass(frozen=True)
class FileRef:
    """A file's content (a blob in the store) and, where known, its permission bits."""

    blob: str
    mode: int | None  # None: keep the mode of a replaced file, else the default


@dataclass
class _Tree:
    """The files of a repo, with the number of entries directly in each directory.

    Walks up from a path stop at the first directory that already exists (or stays):
    the work of an add or remove is the directories it makes or empties, not the
    path's depth, which may reach 2048 levels."""

    files: dict[str, FileRef] = field(default_factory=dict)
    children: dict[str, int] = field(default_factory=dict)  # directory -> entries in it
    _sorted: list[str] | None = None  # the files' paths in order, for files_under

    def add(self, path: str, file: FileRef) -> None:
        if path not in self.files:
            self._sorted = None
            parent = parent_of(path)
            while parent:
                count = self.children.get(parent, 0)
                self.children[parent] = count + 1
                if count:  # it existed: its own parents count it already
                    break
                parent = parent_of(parent)
        self.files[path] = file

    def remove(self, path: str) -> FileRef:
        parent = parent_of(path)
        while parent:
            count = self.children[parent] - 1
            if count:
                self.children[parent] = count
                break
            del self.children[parent]  # emptied: it goes, and leaves its parent
            parent = parent_of(parent)
        return self.files.pop(path)

    def is_dir(self, path: str) -> bool:
        return path in self.children

    def files_under(self, path: str) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.files)
        prefix = path + "/"
        found = []
        for p in self._sorted[bisect_left(self._sorted, prefix) :]:
            if not p.startswith(prefix):
                break
            if p in self.files:  # (removed since the list was sorted)
                found.append(p)
        return found

    def check_writable(self, path: str, what: str) -> None:
        """A file may go at `path`: it is no directory and has no file for an ancestor."""
        if self.is_dir(path):
            raise RelaceError(400, f"Cannot {what} {path!r}: it is a directory")
        parent = parent_of(path)
        while parent and not self.is_dir(parent):  # above a directory, only directories
            if parent in self.files:
                raise RelaceError(400, f"Cannot {what} {path!r}: {parent!r} is a file")
            parent = parent_of(parent)


def plan_diff(entries: Mapping[str, Entry], ops: Sequence[DiffOp]) -> Plan:
    """A `source.type=diff` update: deletes, then writes (the last per path wins), then
    renames (the last target per source wins), as the service applies them."""
    tree = _tree(entries)
    deleted_roots = list(dict.fromkeys(op.path for op in ops if isinstance(op, DiffDelete)))
    changed: dict[str, None] = {}
    for path in deleted_roots:  # all must exist before the phase (one may hold another)
        if path not in tree.files and not tree.is_dir(path):
            raise RelaceError(404, f"File not found: {path}")
    for path in deleted_roots:
        if path in tree.files:
            tree.remove(path)
        elif tree.is_dir(path):
            for sub in tree.files_under(path):
                tree.remove(sub)
        changed[path] = None
    for op in ops:
        if isinstance(op, DiffWrite):
            tree.check_writable(op.path, "write")
            replaced = tree.files.get(op.path)
            tree.add(op.path, FileRef(op.blob, replaced.mode if replaced else None))
            changed[op.path] = None
    renames = {op.old: op.new for op in ops if isinstance(op, DiffRename)}
    for old, new in renames.items():
        if old not in tree.files:
            if tree.is_dir(old):
                why = "directory renames are not supported"
                raise RelaceError(400, f"Cannot rename {old!r}: {why}")
            raise RelaceError(404, f"File not found: {old}")
        if old != new:
            file = tree.remove(old)
            tree.check_writable(new, "rename onto")
            tree.add(new, file)
        changed[new] = None
    return _plan(entries, tree, deleted_roots, list(changed))


def plan_files(entries: Mapping[str, Entry], files: Mapping[str, FileRef]) -> Plan:
    """A `source.type=files` update (or a create): `files` become the complete set of
    files; every other file goes. A file given without a mode keeps the one it had."""
    old = _tree(entries)
    tree = _Tree()
    for path in sorted(files):  # a parent sorts before its children
        tree.check_writable(path, "write")
        given, prev = files[path], old.files.get(path)
        if given.mode is None and prev is not None:
            given = FileRef(given.blob, prev.mode)
        tree.add(path, given)
    plan = _plan(entries, tree, [], [])
    gone = [p for p in old.files if p not in tree.files]
    changed = sorted({*gone, *(p for p, f in tree.files.items() if old.files.get(p) != f)})
    return Plan(plan.operations, changed)


def copy_of(entries: Mapping[str, Entry]) -> dict[str, FileRef]:
    """The files of a snapshot, for `plan_files` (a repo created from a template)."""
    return {
        p: FileRef(e.version, e.mode)
        for p, e in entries.items()
        if e.type == "file" and e.version is not None
    }


def _plan(
    entries: Mapping[str, Entry], tree: _Tree, deleted_roots: Iterable[str], changed: list[str]
) -> Plan:
    old_files = {p: e for p, e in entries.items() if _is_file(e)}
    old_dirs = {p for p, e in entries.items() if e.type == "dir"}
    gone = [p for p in old_files if p not in tree.files]
    written = [
        p
        for p, f in tree.files.items()
        if p not in old_files
        or old_files[p].version != f.blob
        or (f.mode is not None and f.mode != old_files[p].mode)
    ]
    # Directories left without files vanish, as in git: those above a file that went,
    # those deleted explicitly, and (empty) ones where a file is now written.
    touched: set[str] = set()
    for p in gone:  # each walk stops at a directory already touched
        parent = parent_of(p)
        while parent and parent not in touched:
            touched.add(parent)
            parent = parent_of(parent)
    touched.update(p for p in [*deleted_roots, *written] if p in old_dirs)
    touched = {d for d in touched if d in old_dirs and not tree.is_dir(d)}
    dirs_gone: set[str] = set()
    if touched:  # a directory goes when it, or one above it, does: parents first
        for d in sorted(old_dirs, key=lambda d: d.count("/")):
            if d in touched or parent_of(d) in dirs_gone:
                dirs_gone.add(d)
    deletes = sorted([*gone, *dirs_gone], key=lambda p: (-p.count("/"), p))  # deepest first
    operations: list[Operation] = [
        Delete(p, expect=old_files[p].version if p in old_files else PRESENT) for p in deletes
    ]
    for p in sorted(written):
        old = old_files.get(p)
        expect = old.version if old is not None else ABSENT
        operations.append(Write(p, tree.files[p].blob, expect=expect, mode=tree.files[p].mode))
    return Plan(operations, changed)


def _tree(entries: Mapping[str, Entry]) -> _Tree:
    tree = _Tree()
    for path, entry in entries.items():
        if _is_file(entry):
            assert entry.version is not None
            tree.add(path, FileRef(entry.version, entry.mode))
    return tree


def _is_file(entry: Entry) -> bool:
    return entry.type == "file" and entry.version is not None
