"""Property: after any sequence of commits, the store equals a plain dict model (files,
symlinks and directories).

Drives SqliteStore in-process (no HTTP) for speed. The model predicts which commits
succeed; a refused commit must leave the store exactly as it was, and every kept older
head must still list what the model held then.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repomount.paths import ancestors_of
from repomount.server.sqlite_store import SqliteStore
from repomount.server.store import (
    ABSENT,
    Delete,
    Mkdir,
    Operation,
    Rename,
    StoreError,
    Symlink,
    Write,
)
from support.util import sha

CONTENTS = [b"", b"one", b"two", b"three" * 100]
# "one" has the version of the file content b"one"; "" and "x\0y" are refused.
TARGETS = ["one", "../a", "/abs/b", "", "x\0y"]


class Refused(Exception):
    pass


Kind = Literal["file", "symlink"]


@dataclass
class Model:
    # Files and symlinks: (kind, content), a symlink's content being its target's bytes.
    files: dict[str, tuple[Kind, bytes]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)

    def copy(self) -> Model:
        return Model(dict(self.files), set(self.dirs))

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.dirs

    def below(self, path: str) -> list[str]:
        prefix = path + "/"
        return [p for p in [*self.files, *self.dirs] if p.startswith(prefix)]

    def make_parents(self, path: str) -> None:
        for parent in ancestors_of(path):
            if parent in self.files:
                raise Refused
            self.dirs.add(parent)

    def replace(self, path: str, expect: str | None, new: tuple[Kind, bytes]) -> None:
        self.make_parents(path)
        if path in self.dirs:
            raise Refused
        current = self.files.get(path)
        if expect == ABSENT and current is not None:
            raise Refused
        if expect not in (None, ABSENT) and (current is None or sha(current[1]) != expect):
            raise Refused
        self.files[path] = new

    def apply(self, op: Operation) -> None:
        if isinstance(op, Write):
            content = next(c for c in CONTENTS if sha(c) == op.blob)
            self.replace(op.path, op.expect, ("file", content))
        elif isinstance(op, Symlink):
            target = op.target.encode()
            if not target or b"\0" in target:
                raise Refused
            self.replace(op.path, op.expect, ("symlink", target))
        elif isinstance(op, Delete):
            if not self.exists(op.path) or self.below(op.path):
                raise Refused
            self.files.pop(op.path, None)
            self.dirs.discard(op.path)
        elif isinstance(op, Mkdir):
            self.make_parents(op.path)
            if op.path in self.files:
                raise Refused
            self.dirs.add(op.path)
        else:
            self.rename(op.src, op.dst)

    def rename(self, src: str, dst: str) -> None:
        if dst.startswith(src + "/") or not self.exists(src):
            raise Refused
        if src == dst:
            return
        self.make_parents(dst)
        if self.exists(dst):
            if (dst in self.files) != (src in self.files) or self.below(dst):
                raise Refused
            self.files.pop(dst, None)
            self.dirs.discard(dst)
        for path in [src, *self.below(src)]:
            new = dst + path[len(src) :]
            if path in self.files:
                self.files[new] = self.files.pop(path)
            else:
                self.dirs.discard(path)
                self.dirs.add(new)


names = st.sampled_from(["a", "b", "c"])
new_paths = st.lists(names, min_size=1, max_size=3).map("/".join)
versions = [sha(c) for c in CONTENTS] + [sha(t.encode()) for t in TARGETS[:3]]


# The first commit, so that even short examples meet a file, a symlink and a directory.
START: list[Operation] = [Write("a", sha(b"one")), Symlink("b", "a"), Mkdir("c")]


@st.composite
def operation(draw: st.DrawFn, model: Model) -> Operation:
    """Any operation, but half the time on a path that exists and with an `expect` that
    often holds: most commits then succeed, and renames, say, often meet a symlink on
    one side and a file on the other."""
    existing = sorted([*model.files, *model.dirs])

    def path() -> str:
        if existing and draw(st.booleans()):
            return draw(st.sampled_from(existing))
        return draw(new_paths)

    kind = draw(st.sampled_from(["write", "symlink", "delete", "rename", "mkdir"]))
    p = path()
    if kind == "delete":
        return Delete(p)
    if kind == "rename":
        return Rename(p, path())
    if kind == "mkdir":
        return Mkdir(p)
    current = model.files.get(p)
    holds = ABSENT if current is None else sha(current[1])
    expect = draw(st.sampled_from([None, holds, ABSENT, draw(st.sampled_from(versions))]))
    if kind == "write":
        return Write(p, sha(draw(st.sampled_from(CONTENTS))), expect)
    return Symlink(p, draw(st.sampled_from(TARGETS)), expect)


def snapshot(store: SqliteStore, at: int | None = None) -> Model:
    listing = store.list_tree("r", "", recursive=True, at=at, after=None, limit=10_000)
    # The native face's pages (SQLite writes them as JSON) say the same.
    page = store.list_tree_json("r", "", recursive=True, at=at, after=None, limit=10_000)
    # (`mtime` to the microsecond: SQLite's printf rounds the last digit its own way
    # about once in 50,000)
    assert page.head == listing.head and not page.more
    written = json.loads(page.entries)
    assert all(
        abs(w.pop("mtime") - e.mtime_ns / 1e9) < 1.5e-6
        for w, e in zip(written, listing.entries, strict=True)
    )
    assert written == [
        {
            "path": e.path,
            "type": e.type,
            "size": e.size,
            "version": e.version,
            "mtime_ns": e.mtime_ns,
            "mode": e.mode,
            **({} if e.target is None else {"target": e.target}),
        }
        for e in listing.entries
    ]
    model = Model()
    for entry in listing.entries:
        if entry.type == "dir":
            assert entry.version is None and entry.target is None
            model.dirs.add(entry.path)
            continue
        if entry.type == "symlink":
            assert entry.target is not None and entry.mode == 0o777
            content = entry.target.encode()
        else:
            assert entry.version is not None and entry.target is None
            assert entry.mode == 0o644  # never a replaced symlink's 0777
            with store.open_blob(entry.version) as f:
                content = f.read()
        assert (entry.size, entry.version) == (len(content), sha(content))
        model.files[entry.path] = (entry.type, content)
    return model


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_store_matches_dict_model(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp))
        try:
            store.create_repo("r")
            for content in CONTENTS:
                spool = store.new_spool()
                spool.write(content)
                store.add_blob(spool)
            model = Model()
            history = [model.copy()]  # history[h] is the model at head h
            for i in range(1 + data.draw(st.integers(1, 12), label="commits")):
                drawn = st.lists(operation(model), min_size=1, max_size=4)
                ops = START if i == 0 else data.draw(drawn, label="ops")
                expected, refused = model.copy(), False
                try:
                    for op in ops:
                        expected.apply(op)
                except Refused:
                    refused = True
                try:
                    result = store.commit("r", ops)
                except StoreError as error:
                    assert refused, f"store refused {ops}: {error}"
                else:
                    assert not refused, f"store accepted {ops}"
                    assert result.head == len(history)
                    model = expected
                    history.append(model.copy())
                assert snapshot(store) == model
            assert store.head("r") == len(history) - 1
            for head, then in enumerate(history):
                assert snapshot(store, at=head) == then
        finally:
            store.close()
