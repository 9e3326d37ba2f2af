"""Store extensions the faces need: per-repository attributes and `updated_at`."""

from __future__ import annotations

from pathlib import Path

import pytest

from repomount.server.sqlite_store import SqliteStore
from repomount.server.store import NotFound, Write


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
