"""Store.commit(base=...): a commit made against a head that has moved is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from repomount.server.sqlite_store import SqliteStore
from repomount.server.store import Idempotency, StaleBase, Write


def test_base_must_be_the_head_but_an_idempotent_replay_wins(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    try:
        store.create_repo("r")
        spool = store.new_spool()
        spool.write(b"x")
        store.add_blob(spool)
        blob = spool.sha256
        first = store.commit("r", [Write("a", blob)], base=0, idempotency=Idempotency("k", "f"))
        assert first.head == 1
        with pytest.raises(StaleBase):
            store.commit("r", [Write("b", blob)], base=0)
        assert store.head("r") == 1
        # The replay is answered before the (now stale) base is looked at.
        again = store.commit("r", [Write("a", blob)], base=0, idempotency=Idempotency("k", "f"))
        assert again.replayed and again.head == 1
        assert store.commit("r", [Write("b", blob)], base=1).head == 2
    finally:
        store.close()
