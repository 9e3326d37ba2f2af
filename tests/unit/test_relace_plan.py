"""The Relace adapter's pure logic: snapshots, precondition simulation, request packing.

The packing is checked against a model of the service: requests applied one after the
other, each in Relace's three phases, must give what the operations mean in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from repomount.remotes.base import (
    Applied,
    Change,
    Conflicted,
    Delete,
    Expect,
    ExpectT,
    Mkdir,
    Rename,
    Write,
)
from repomount.remotes.relace_plan import (
    RemoteFile,
    Snapshot,
    WireDelete,
    WireOp,
    WireRename,
    WireWrite,
    check,
    group,
    paths_to_check,
)
from support.util import sha


def w(path: str, data: bytes = b"x", expect: ExpectT = Expect.ANY) -> Write:
    return Write(path, Path("/nonexistent"), len(data), sha(data), expect)


def ww(index: int, path: str, data: bytes = b"x") -> WireWrite:
    return WireWrite(index, w(path, data))


def text(op: WireWrite) -> int:
    return op.change.size


def pack(ops: Sequence[WireOp], max_ops: int = 100, budget: int = 1000) -> list[list[WireOp]]:
    return group(ops, inline=text, max_ops=max_ops, budget=budget)


# --------------------------------------------------------------------------- snapshots


def test_snapshot_lists_directories_implied_by_files() -> None:
    files = {p: RemoteFile(1, sha(p.encode())) for p in ("a/b/c.txt", "a/d.txt", "top")}
    snap = Snapshot(files, taken=0.0)
    assert [(e.path, e.kind) for e in snap.listing("", recursive=False) or []] == [
        ("a", "dir"),
        ("top", "file"),
    ]
    assert [e.path for e in snap.listing("a", recursive=True) or []] == [
        "a/b",
        "a/b/c.txt",
        "a/d.txt",
    ]
    assert snap.listing("top", recursive=False) is None  # a file, not a directory
    assert snap.listing("nope", recursive=False) is None
    entry = snap.entry("a/d.txt")
    assert entry is not None and entry.version == sha(b"a/d.txt") and entry.size == 1
    assert snap.files_under("a") == ["a/b/c.txt", "a/d.txt"]


# --------------------------------------------------------------------------- checking


def test_paths_to_check() -> None:
    changes: list[Change] = [
        w("any.txt"),
        w("new.txt", expect=Expect.ABSENT),
        Delete("gone.txt"),
        Rename("src", "dst"),
        Rename("s2", "d2", expect_to=Expect.ABSENT),
        Mkdir("dir"),
    ]
    assert paths_to_check(changes) == {"new.txt", "gone.txt", "src", "s2", "d2"}


def test_check_simulates_the_batch_in_order() -> None:
    v1 = sha(b"v1")
    changes: list[Change] = [
        w("a", b"new", expect=Expect.ABSENT),  # conflict: a exists
        w("b", b"b1", expect=Expect.ABSENT),  # ok
        w("b", b"b2", expect=sha(b"b1")),  # ok: expects what the batch wrote
        Delete("c", expect=v1),  # ok
        Delete("c"),  # already gone by then: nothing to send
        Delete("c", expect=v1),  # gone, but a version was expected
        Rename("a", "z", expect=v1, expect_to=Expect.ABSENT),  # ok
        Rename("b", "a", expect=sha(b"b2"), expect_to=Expect.ABSENT),  # ok: a moved away
        Mkdir("dir"),
    ]
    current = {"a": v1, "b": None, "c": v1, "z": None}
    result = check(changes, current, tree=None)
    assert result.outcomes == [
        Conflicted(v1),
        None,
        None,
        None,
        Applied(None),
        Conflicted(None),
        None,
        None,
        Applied(None),
    ]
    assert [type(op).__name__ for op in result.ops] == [
        "WireWrite",
        "WireWrite",
        "WireDelete",
        "WireRename",
        "WireRename",
    ]
    assert result.versions == {1: sha(b"b1"), 2: sha(b"b2"), 3: None, 6: v1, 7: sha(b"b2")}


def test_a_directory_rename_is_one_rename_per_file() -> None:
    tree = Snapshot({p: RemoteFile(1, "v") for p in ("d/a", "d/s/b", "other")}, taken=0.0)
    changes: list[Change] = [
        w("d/new", b"n"),  # written earlier in the batch: moves along
        Rename("d", "e", expect_to=Expect.ABSENT),
        Rename("empty", "e2"),  # exists only locally: nothing to do
        Rename("other-dir", "d"),  # no such thing, but a version was not expected
    ]
    current = {"d": None, "e": None, "empty": None, "other-dir": None}
    result = check(changes, current, tree)
    renames = [(op.src, op.dst) for op in result.ops if isinstance(op, WireRename)]
    assert renames == [("d/a", "e/a"), ("d/new", "e/new"), ("d/s/b", "e/s/b")]
    assert result.outcomes[2:] == [Applied(None), Applied(None)]


def test_a_directory_rename_onto_a_non_empty_directory_conflicts() -> None:
    tree = Snapshot({p: RemoteFile(1, "v") for p in ("d/a", "e/x")}, taken=0.0)
    result = check([Rename("d", "e", expect_to=Expect.ABSENT)], {"d": None, "e": None}, tree)
    assert result.outcomes == [Conflicted(None)] and result.ops == []


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize(
    ("ops", "sizes"),
    [
        # the service runs deletes, writes, renames: these keep their meaning together
        ([WireDelete(0, "x"), ww(1, "x")], [2]),
        ([ww(0, "a"), WireRename(1, "a", "b")], [2]),
        ([WireDelete(0, "d"), ww(1, "d/f")], [2]),
        ([WireDelete(0, "b"), WireRename(1, "a", "b")], [2]),
        ([ww(0, "a"), ww(1, "b"), WireDelete(2, "c"), WireRename(3, "d", "e")], [4]),
        # ... and these would not
        ([WireRename(0, "a", "b"), ww(1, "a")], [1, 1]),
        ([ww(0, "x"), WireDelete(1, "x")], [1, 1]),
        ([ww(0, "d/f"), WireDelete(1, "d")], [1, 1]),
        ([WireRename(0, "a", "b"), WireRename(1, "b", "c")], [1, 1]),
        ([ww(0, "x", b"1"), ww(1, "x", b"2")], [1, 1]),
        ([WireRename(0, "a", "b"), WireDelete(1, "b")], [1, 1]),
    ],
)
def test_group_splits_only_where_order_matters(ops: list[WireOp], sizes: list[int]) -> None:
    assert [len(r) for r in pack(ops)] == sizes


def test_group_sends_binary_writes_alone_and_respects_limits() -> None:
    binary = ww(1, "b.bin", b"\xff")
    ops: list[WireOp] = [ww(0, "a"), binary, ww(2, "c"), ww(3, "d"), ww(4, "e")]
    requests = group(ops, inline=lambda op: None if op is binary else 1, max_ops=2, budget=10)
    assert [[op.index for op in r] for r in requests] == [[0], [1], [2, 3], [4]]
    big = [ww(i, f"f{i}", b"x" * 400) for i in range(4)]
    assert [len(r) for r in pack(big, budget=1000)] == [2, 2]


# A tiny model of the service: files as a dict, an update applied in three phases.


def apply_update(files: dict[str, str], ops: Sequence[WireOp]) -> None:
    for op in ops:
        if isinstance(op, WireDelete):
            if op.path not in files:
                raise LookupError(op.path)
            del files[op.path]
    for op in ops:
        if isinstance(op, WireWrite):
            files[op.change.path] = op.change.sha256
    for op in ops:
        if isinstance(op, WireRename):
            if op.src not in files:
                raise LookupError(op.src)
            files[op.dst] = files.pop(op.src)


def apply_one_by_one(files: dict[str, str], ops: Sequence[WireOp]) -> None:
    for op in ops:
        apply_update(files, [op])


@st.composite
def wire_ops(draw: st.DrawFn) -> list[WireOp]:
    """Operations valid one by one from {a, b}: each delete/rename source exists."""
    files = {"a", "b"}
    ops: list[WireOp] = []
    for i in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["write", "delete", "rename"]))
        if kind == "write" or not files:
            path = draw(st.sampled_from(["a", "b", "c"]))
            ops.append(ww(i, path, draw(st.binary(max_size=2))))
            files.add(path)
        elif kind == "delete":
            path = draw(st.sampled_from(sorted(files)))
            ops.append(WireDelete(i, path))
            files.discard(path)
        else:
            src = draw(st.sampled_from(sorted(files)))
            dst = draw(st.sampled_from(["a", "b", "c"]))
            if dst == src:
                continue
            ops.append(WireRename(i, src, dst))
            files.discard(src)
            files.add(dst)
    return ops


@given(wire_ops())
def test_packed_requests_mean_what_the_operations_mean_in_order(ops: list[WireOp]) -> None:
    expected = {"a": "A", "b": "B"}
    apply_one_by_one(expected, ops)
    got = {"a": "A", "b": "B"}
    for request in pack(ops):
        apply_update(got, request)
    assert got == expected
