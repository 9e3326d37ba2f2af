"""Store extensions the faces need: per-repository attributes, `updated_at` and the
commit log."""

from __future__ import annotations

from pathlib import Path

import pytest

from repomount.server.sqlite_store import SqliteStore
from repomount.server.store import Gone, NotFound, Write


def test_attrs_set_replace_remove_and_go_with_the_repo(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    try:
        store.create_repo("r")
        assert store.repo_attrs("r") == {}
        store.set_repo_attrs("r", {"relace.metadata": '{"a": "1"}', "x.y": "z"})
        store.set_repo_attrs("r", {"x.y": None, "relace.metadata": "{}"})
        assert store.repo_attrs("r") == {"relace.metadata": "{}"}
        store.delete_repo("r")
        store.create_repo("r")  # a new repo of the same name starts without attributes
        assert store.repo_attrs("r") == {}
        with pytest.raises(NotFound):
            store.repo_attrs("nope")
        with pytest.raises(NotFound):
            store.set_repo_attrs("nope", {"k": "v"})
    finally:
        store.close()


def test_updated_at_is_the_head_commit_time(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data", history=1)
    try:
        created = store.create_repo("r")
        assert created.updated_at is None
        assert store.repo_info("r").updated_at is None
        spool = store.new_spool()
        spool.write(b"x")
        store.add_blob(spool)
        times = []
        for _ in range(3):  # with history=1 older commits are pruned; the head's stays
            store.commit("r", [Write("f", spool.sha256)])
            info = store.repo_info("r")
            assert info.updated_at is not None and info.updated_at >= info.created_at
            times.append(info.updated_at)
        assert times == sorted(times)
        assert [r.updated_at for r in store.list_repos()] == [times[-1]]
    finally:
        store.close()


def test_the_commit_log_is_newest_first_and_kept_history_only(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data", history=2)
    try:
        store.create_repo("r")
        assert store.commit_log("r", None, 10) == []
        spool = store.new_spool()
        spool.write(b"x")
        store.add_blob(spool)
        for n in range(4):
            store.commit("r", [Write(f"f{n}", spool.sha256)], message=f"m{n}", author=f"a{n}")
        log = store.commit_log("r", None, 10)
        # history=2: heads 2..4 are kept (the floor is the oldest answerable head)
        assert [(c.seq, c.message, c.author) for c in log] == [
            (4, "m3", "a3"),
            (3, "m2", "a2"),
            (2, "m1", "a1"),
        ]
        assert log[0].time >= log[1].time
        assert [c.seq for c in store.commit_log("r", 3, 1)] == [3]
        with pytest.raises(NotFound):
            store.commit_log("r", 5, 10)
        with pytest.raises(Gone):
            store.commit_log("r", 1, 10)
    finally:
        store.close()
