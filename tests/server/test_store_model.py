"""Property: after any sequence of commits, the store equals a plain dict model.

Drives SqliteStore in-process (no HTTP) for speed. The model predicts which commits
succeed; a refused commit must leave the store exactly as it was, and every kept older
head must still list what the model held then.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

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
    Write,
)

CONTENTS = [b"", b"one", b"two", b"three" * 100]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Refused(Exception):
    pass


@dataclass
class Model:
    files: dict[str, bytes] = field(default_factory=dict)
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

    def apply(self, op: Operation) -> None:
        if isinstance(op, Write):
            self.make_parents(op.path)
            if op.path in self.dirs:
                raise Refused
            current = self.files.get(op.path)
            if op.expect == ABSENT and current is not None:
                raise Refused
            if op.expect not in (None, ABSENT) and (current is None or sha(current) != op.expect):
                raise Refused
            self.files[op.path] = next(c for c in CONTENTS if sha(c) == op.blob)
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
paths = st.lists(names, min_size=1, max_size=3).map("/".join)
expects = st.one_of(st.none(), st.just(ABSENT), st.sampled_from([sha(c) for c in CONTENTS]))
operations = st.one_of(
    st.builds(Write, paths, st.sampled_from([sha(c) for c in CONTENTS]), expects),
    st.builds(Delete, paths),
    st.builds(Rename, paths, paths),
    st.builds(Mkdir, paths),
)
commits = st.lists(st.lists(operations, min_size=1, max_size=4), min_size=1, max_size=12)


def snapshot(store: SqliteStore, at: int | None = None) -> Model:
    listing = store.list_tree("r", "", recursive=True, at=at, after=None, limit=10_000)
    model = Model()
    for entry in listing.entries:
        if entry.type == "dir":
            model.dirs.add(entry.path)
        else:
            assert entry.version is not None
            with store.open_blob(entry.version) as f:
                model.files[entry.path] = f.read()
            assert entry.size == len(model.files[entry.path])
    return model


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commits)
def test_store_matches_dict_model(batches: list[list[Operation]]) -> None:
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
            for ops in batches:
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
