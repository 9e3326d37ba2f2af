"""Issue 16 #5: pending changes are counted per change the remote will see, not per
journal row (vfs/pending.py), and listed oldest first within a bound."""

from __future__ import annotations

from typing import Any

from repomount.remotes.base import Expect
from repomount.vfs.pending import summarize
from repomount.vfs.records import Record

SIZES = {"b1": 3, "b2": 5, "b3": 7}


def _size(name: str) -> int:
    return SIZES.get(name, 0)


def _write(rid: int, path: str, blob: str, at: float, **kw: Any) -> Record:
    return Record(rid, "write", path, blob=blob, expect=Expect.ABSENT, created=at, **kw)


def test_a_new_file_is_one_change_however_many_rows() -> None:
    rows = [_write(1, "f", "b1", 10.0), _write(2, "f", "b2", 11.0)]  # create, then content
    s = summarize(rows, _size, now=20.0)
    assert (s.count, s.rows, s.bytes, s.oldest_age) == (1, 2, 5, 10.0)  # the newest content
    assert s.changes == [
        {"op": "write", "path": "f", "bytes": 5, "age": 10.0, "tries": 0, "state": "pending"}
    ]
    assert s.by_op == {"write": 1}


def test_a_directory_is_a_change_and_a_file_made_and_deleted_is_none() -> None:
    rows = [
        Record(1, "mkdir", "d", created=1.0),
        _write(2, "d/a", "b1", 2.0),
        _write(3, "tmp", "b2", 3.0),
        Record(4, "delete", "tmp", expect=Expect.ANY, created=4.0),
    ]
    s = summarize(rows, _size, now=5.0)
    assert [(c["op"], c["path"]) for c in s.changes] == [("mkdir", "d"), ("write", "d/a")]
    assert (s.count, s.bytes, s.by_op) == (2, 3, {"mkdir": 1, "write": 1})


def test_held_rows_and_their_errors_show_on_their_change() -> None:
    rows = [
        _write(1, "f", "b1", 1.0, tries=1, last_error="Conflict: f changed", state="held"),
        _write(2, "f", "b3", 2.0),
    ]
    [change] = summarize(rows, _size, now=3.0).changes
    assert change["state"] == "held" and change["error"] == "Conflict: f changed"
    assert change["tries"] == 1 and change["bytes"] == 7


def test_the_list_is_bounded_but_the_counts_are_not() -> None:
    rows = [_write(i, f"f{i:03}", "b1", float(i)) for i in range(1, 101)]
    s = summarize(rows, _size, now=200.0, limit=10)
    assert [c["path"] for c in s.changes] == [f"f{i:03}" for i in range(1, 11)]
    assert (s.count, s.bytes, s.oldest_age) == (100, 300, 199.0)
    assert summarize(rows, _size, now=200.0, limit=0).changes == []
    assert summarize([], _size, now=1.0).as_status()["pending_oldest_age"] is None
