"""Relace's wire format: clone and update answers, update bodies. No server, no I/O."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from repomount.remotes.base import (
    Aborted,
    Applied,
    Conflicted,
    Delete,
    Expect,
    Failed,
    ProtocolError,
    Write,
)
from repomount.remotes.relace_plan import (
    RemoteFile,
    WireDelete,
    WireRename,
    WireWrite,
    check,
)
from repomount.remotes.relace_wire import clone_files, repo_head, repo_name, update_body


def test_repo_name_falls_back_to_the_id() -> None:
    assert repo_name({"metadata": {"name": "my app"}}, "r1") == "my app"
    for data in ({}, {"metadata": None}, {"metadata": "x"}, {"metadata": {"name": ""}}):
        assert repo_name(data, "r1") == "r1"


def test_repo_head() -> None:
    assert repo_head({"repo_head": 12}) == "12"
    with pytest.raises(ProtocolError, match="unexpected answer from Relace"):
        repo_head({"changed_files": []})


def test_clone_files_hash_the_text_and_leave_out_unusable_paths() -> None:
    files = clone_files(
        {
            "files": [
                {"filename": "a.txt", "content": "héllo"},
                {"filename": "../up.txt", "content": "x"},
                {"filename": "lone", "content": "\ud800"},  # JSON can carry a lone surrogate
            ]
        }
    )
    text = "héllo".encode()
    assert files["a.txt"] == RemoteFile(len(text), hashlib.sha256(text).hexdigest())
    raw = "\ud800".encode("utf-8", "surrogatepass")
    assert files["lone"] == RemoteFile(len(raw), hashlib.sha256(raw).hexdigest())
    assert "../up.txt" not in files  # (skipped, logged)


@pytest.mark.parametrize("data", [{}, {"files": None}, {"files": {"a": "x"}}])
def test_malformed_clones_are_protocol_errors(data: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="Relace"):
        clone_files(data)


def test_malformed_clone_items_are_skipped_not_the_clone() -> None:
    bad = [{"filename": "a"}, {"content": "x"}, {"filename": 5, "content": "x"}, "f"]
    files = clone_files({"files": [*bad, {"filename": "ok", "content": ""}]})
    assert list(files) == ["ok"]


def test_update_body() -> None:
    change = Write("a.txt", Path("/spool"), 2, "0" * 64, Expect.ANY)
    request = [WireDelete(0, "old"), WireWrite(1, change), WireRename(2, "b", "c")]
    assert update_body(request, {1: "hi"}) == {
        "source": {
            "type": "diff",
            "operations": [
                {"type": "delete", "filename": "old"},
                {"type": "write", "filename": "a.txt", "content": "hi"},
                {"type": "rename", "old_filename": "b", "new_filename": "c"},
            ],
        }
    }
    with pytest.raises(KeyError):  # a write's text must have been read
        update_body([WireWrite(1, change)], {})


def test_a_checked_batch_result_fills_in_what_was_sent() -> None:
    """Changes decided without a request keep their outcome; a sent one whose request
    did not fail is Applied at the version the check foresaw."""
    change = Write("a.txt", Path("/spool"), 2, "1" * 64, Expect.ANY)
    checked = check([change, Delete("b", expect="v0"), Delete("c")], {"b": "v1", "c": "v2"}, None)
    assert checked.outcomes[1] == Conflicted("v1")
    checked.outcomes[2] = Failed(Aborted("its request failed"))
    result = checked.result("h9")
    assert result.head == "h9"
    assert result.outcomes == [Applied("1" * 64), Conflicted("v1"), checked.outcomes[2]]
