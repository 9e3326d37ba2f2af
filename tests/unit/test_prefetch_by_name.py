"""The walk signal of files opened by name (vfs/prefetch.py): cold opens in path order,
with no directory read above them, walk the directory they all lie in."""

from __future__ import annotations

import pytest

from repomount.vfs import prefetch
from repomount.vfs.prefetch import Prefetcher


def fresh() -> Prefetcher:
    return Prefetcher(None, None, None, 4)  # type: ignore[arg-type]  # (no fetching here)


def test_opens_in_path_order_walk_the_directory_they_share() -> None:
    p = fresh()
    got = [p.opened_by_name(f"a/b/f{i}") for i in range(4)]
    assert got == [None, None, None, "a/b"]
    assert p.opened_by_name("a/c/g0") == "a"  # (widens as the opens go on)
    assert p.opened_by_name("z/h0") == ""


def test_opens_out_of_order_are_no_walk() -> None:
    p = fresh()
    for path in ("a/f3", "a/f1", "a/f2", "a/f0", "a/f9"):
        assert p.opened_by_name(path) is None


def test_opens_spread_over_more_than_the_window_are_no_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(prefetch.time, "monotonic", lambda: now[0])
    p = fresh()
    for i in range(4):
        assert p.opened_by_name(f"a/f{i}") is None
        now[0] += prefetch.COLD_WINDOW / 2


def test_a_few_opens_across_the_top_do_not_walk_the_tree() -> None:
    p = fresh()
    for path in ("a/x", "b/y", "c/z", "d/w"):
        assert p.opened_by_name(path) is None
