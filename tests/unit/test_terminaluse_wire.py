"""Terminal Use's wire format: manifest entries, listings with implied directories,
upload queries and answers. No server, no I/O."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from repomount.remotes.base import Entry, Expect, ExpectT, ProtocolError, Write
from repomount.remotes.terminaluse_wire import (
    archive_version,
    below,
    expected,
    file_entry,
    listed_paths,
    norm,
    page,
    timestamp,
    tree,
    upload_headers,
    upload_params,
    uploaded,
)

HASH = hashlib.sha256(b"x").hexdigest()


def write(expect: ExpectT = Expect.ANY, key: str = "") -> Write:
    return Write("d/a.txt", Path("/spool"), 1, HASH, expect, key=key)


def test_versions_compare_without_prefix_or_case() -> None:
    assert norm(f" sha256:{HASH.upper()} ") == HASH
    assert expected(Expect.ANY, None) and expected(Expect.ANY, HASH)
    assert expected(Expect.ABSENT, None) and not expected(Expect.ABSENT, HASH)
    assert expected(f"sha256:{HASH}", HASH)
    assert not expected(HASH, None) and not expected(HASH, "other")


def test_archive_version() -> None:
    assert archive_version({"archive_checksum": "sha256:AB"}) == "sha256:AB"  # as written
    assert archive_version({"archive_checksum": None}) == ""
    with pytest.raises(ProtocolError, match="Terminal Use"):
        archive_version({})


def test_manifest_entries() -> None:
    f = file_entry(
        {
            "path": "/d/a.txt",
            "size_bytes": 5,
            "checksum": f"sha256:{HASH}",
            "modified_at": "1970-01-01T00:00:10Z",
        }
    )
    assert f == Entry("d/a.txt", "file", size=5, version=HASH, mtime=10.0)
    assert file_entry({"path": "d", "is_directory": True}) == Entry("d", "dir")
    assert file_entry({"path": "e"}) == Entry("e", "file", size=0)
    assert timestamp("1970-01-01T00:01:00+00:00") == 60.0


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"path": "a", "size_bytes": "many"},
        {"path": "a", "modified_at": "last tuesday"},
    ],
)
def test_malformed_entries_are_protocol_errors(data: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="unexpected answer from Terminal Use"):
        file_entry(data)


def test_pages_and_listed_paths() -> None:
    entries, held, total = page({"files": [{"path": "/a"}, {"path": "b"}], "total_count": 9})
    assert [e.path for e in entries] == ["a", "b"] and (held, total) == (2, 9)
    assert listed_paths({"files": [{"path": "/a/b"}]}) == ["a/b"]
    for bad in ({"files": []}, {"total_count": 1}, {"files": {}, "total_count": 1}):
        with pytest.raises(ProtocolError):
            page(bad)
    # A malformed entry is skipped, but still counts for the next page's offset.
    entries, held, total = page({"files": [{}, {"path": "b"}], "total_count": 2})
    assert [e.path for e in entries] == ["b"] and (held, total) == (2, 2)
    with pytest.raises(ProtocolError):
        listed_paths({"files": None})


def test_below() -> None:
    assert below("a/b", "") and below("a", "a") and below("a/b", "a")
    assert not below("ab", "a") and not below("a", "a/b")


def test_tree_adds_implied_directories_and_keeps_children_only() -> None:
    a = Entry("d/e/a.txt", "file", size=1)
    b = Entry("d/b.txt", "file", size=2)
    listed = [a, b, Entry("d", "dir"), Entry("d/x", "dir", mtime=3.0)]
    assert [e.path for e in tree("", listed, recursive=True)] == [
        "d",
        "d/b.txt",
        "d/e",
        "d/e/a.txt",
        "d/x",
    ]
    children = tree("d", listed, recursive=False)
    assert children == [b, Entry("d/e", "dir"), Entry("d/x", "dir", mtime=3.0)]
    assert tree("", [], recursive=False) == []


def test_upload_params_per_precondition() -> None:
    digest = "sha-256=" + base64.b64encode(bytes.fromhex(HASH)).decode()
    assert upload_params(write(), "b1") == {"path": "d/a.txt", "digest": digest}
    assert upload_params(write(Expect.ABSENT), "b1") == {
        "path": "d/a.txt",
        "writeMode": "conditional",
        "baseVersion": "b1",
        "createOnly": "*",
        "digest": digest,
    }
    assert upload_params(write("v0"), "")["expectedVersion"] == "v0"
    with pytest.raises(ValueError):  # a digest that is no hex cannot be sent
        upload_params(Write("a", Path("/spool"), 1, "not hex", Expect.ANY), "b1")


def test_upload_headers_carry_the_key_when_there_is_one() -> None:
    assert upload_headers(write(), 1) == {
        "Content-Type": "application/octet-stream",
        "Content-Length": "1",
    }
    assert upload_headers(write(key="k1"), 1)["Idempotency-Key"] == "k1"


def test_upload_answers() -> None:
    assert uploaded({"archive_version": "A2", "file_version": f"sha256:{HASH}"}) == ("A2", HASH)
    for bad in ({}, {"archive_version": "A2"}, {"file_version": HASH}):
        with pytest.raises(ProtocolError, match="Terminal Use"):
            uploaded(bad)
