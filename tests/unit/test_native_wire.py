"""The native API's wire format: answers parsed (malformed ones are ProtocolError),
request bodies and headers built. No server, no I/O."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from repomount.remotes.base import (
    Aborted,
    Applied,
    Conflict,
    Conflicted,
    Delete,
    Entry,
    Expect,
    ExpectT,
    Failed,
    Mkdir,
    NotFound,
    ProtocolError,
    Rename,
    Symlink,
    Unavailable,
    Write,
)
from repomount.remotes.limits import Timeouts
from repomount.remotes.native_wire import (
    MAX_WAIT,
    TreePage,
    applied,
    batch_key,
    change_batch,
    commit_body,
    content_length,
    content_range,
    etag,
    feed_request,
    file_entry,
    inline_writes,
    join_pages,
    keeps_content,
    operation,
    range_header,
    range_total,
    refused,
    repo_info,
    tree_page,
    with_target,
)

HASH = "ab" * 32


def answer(status: int = 200, **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "http://server/v1/repos/r/files/a.txt")
    return httpx.Response(status, headers=headers, request=request)


def write(
    path: str = "a.txt",
    size: int = 3,
    expect: ExpectT = Expect.ANY,
    mode: int | None = None,
    mtime_ns: int | None = None,
) -> Write:
    return Write(path, Path(f"/spool/{path}"), size, HASH, expect, mode=mode, mtime_ns=mtime_ns)


# --------------------------------------------------------------------------- reading


def test_repo_info_and_its_malformed_answers() -> None:
    info = repo_info({"name": "r", "head": 7})
    assert (info.name, info.head) == ("r", "7")
    assert repo_info({"name": "r", "head": None}).head is None
    assert info.max_file_size is None  # (an older server says none)
    assert repo_info({"name": "r", "head": 7, "max_file_size": 1 << 30}).max_file_size == 1 << 30
    with pytest.raises(ProtocolError, match="the server"):
        repo_info({"name": "r"})
    for bad in (-1, "big", 1.5, True):
        with pytest.raises(ProtocolError, match="max_file_size"):
            repo_info({"name": "r", "head": 7, "max_file_size": bad})


def test_tree_page_entries_of_every_kind() -> None:
    page = tree_page(
        {
            "head": "h1",
            "next_cursor": "c2",
            "entries": [
                {"path": "d", "type": "dir"},
                {
                    "path": "d/f",
                    "type": "file",
                    "size": 3,
                    "version": HASH,
                    "mtime": 5,
                    "mode": 420,
                },
                {"path": "d/l", "type": "symlink", "size": 1, "target": "f"},
                {"path": "d/t", "type": "file", "mtime": 1.0, "mtime_ns": 1_000_000_001},
            ],
        }
    )
    assert (page.head, page.cursor) == ("h1", "c2")
    d, f, link, exact = page.entries
    assert d == Entry("d", "dir")
    assert f == Entry("d/f", "file", size=3, version=HASH, mtime=5.0, mode=420)
    assert (f.time_ns(), d.time_ns()) == (5_000_000_000, None)
    assert exact.time_ns() == 1_000_000_001  # the exact time, not the rounded seconds
    assert (link.kind, link.target) == ("symlink", "f")
    assert tree_page({"head": None, "entries": []}) == TreePage(None, [], None)


@pytest.mark.parametrize(
    "data",
    [
        {"entries": []},  # no head
        {"head": "h"},  # no entries
        {"head": "h", "entries": {"path": "x"}},  # not a list
        {"head": {"h": 1}, "entries": []},
        {"head": "h", "entries": [], "next_cursor": 5},
    ],
)
def test_malformed_tree_pages_are_protocol_errors(data: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="unexpected answer from the server"):
        tree_page(data)


@pytest.mark.parametrize(
    "bad",
    [
        {"path": "x", "type": "socket"},
        {"path": "x", "type": "file", "size": "big"},
        {"path": "x", "type": "symlink"},
        {"path": "x", "type": "symlink", "target": ""},
        "x",
        {"path": "x", "type": "file", "mtime_ns": 1.5},
        {"path": "x", "type": "file", "mtime_ns": "1"},
    ],
)
def test_malformed_entries_are_skipped_not_the_page(bad: object) -> None:
    """Issue 17 #5: one entry a filesystem cannot show no longer fails its listing."""
    page = tree_page({"head": "h", "entries": [bad, {"path": "ok", "type": "file"}]})
    assert page.entries == [Entry("ok", "file")]


def test_pages_join_into_one_listing_only_at_one_head() -> None:
    one, two = Entry("a", "file"), Entry("b", "file")
    listing = join_pages(
        "", [TreePage("h", [one], "c"), TreePage("h", [two], None)], recursive=True
    )
    assert (listing.head, listing.entries, listing.recursive) == ("h", [one, two], True)
    with pytest.raises(ProtocolError, match="spans heads"):
        join_pages("", [TreePage("h1", [one], "c"), TreePage("h2", [two], None)], recursive=False)


def test_file_entry_from_headers() -> None:
    entry = file_entry(
        "a.txt",
        answer(
            **{
                "Content-Length": "3",
                "ETag": f'W/"{HASH}"',
                "Last-Modified": "Thu, 01 Jan 1970 00:00:10 GMT",
                "X-Repomount-Mode": "755",
                "X-Repomount-Mtime-Ns": "10000000007",
            }
        ),
    )
    assert entry == Entry(
        "a.txt", "file", size=3, version=HASH, mtime=10.0, mode=0o755, mtime_ns=10_000_000_007
    )
    link = file_entry("l", answer(**{"Content-Length": "1", "X-Repomount-Type": "symlink"}))
    assert (link.kind, link.version, link.target) == ("symlink", None, None)


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no Content-Length"),
        ({"Content-Length": "x"}, "unexpected answer"),
        ({"Content-Length": "1", "X-Repomount-Type": "dir"}, "X-Repomount-Type"),
        ({"Content-Length": "1", "X-Repomount-Mode": "rwx"}, "unexpected answer"),
        ({"Content-Length": "1", "Last-Modified": "yesterday"}, "unexpected answer"),
        ({"Content-Length": "1", "X-Repomount-Mtime-Ns": "1.5"}, "unexpected answer"),
    ],
)
def test_malformed_file_headers_are_protocol_errors(headers: dict[str, str], why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        file_entry("a.txt", answer(**headers))


def test_a_symlink_target_must_match_its_version_and_be_utf8() -> None:
    target = b"../x"
    entry = Entry("l", "symlink", version=hashlib.sha256(target).hexdigest())
    assert with_target(entry, target).target == "../x"
    with pytest.raises(ProtocolError, match="does not match"):
        with_target(entry, b"../y")
    bad = b"\xff"
    with pytest.raises(ProtocolError, match="not UTF-8"):
        with_target(Entry("l", "symlink", version=hashlib.sha256(bad).hexdigest()), bad)


def test_ranges_and_their_answers() -> None:
    assert range_header(0, 10) == "bytes=0-9"
    assert range_header(5, None) == "bytes=5-"
    assert content_range(answer(206, **{"Content-Range": "bytes 5-9/20"})) == (5, 20)
    assert range_total(answer(416, **{"Content-Range": "bytes */20"})) == 20
    assert etag(answer()) is None and etag(answer(ETag='"v1"')) == "v1"
    assert content_length(answer(**{"Content-Length": "0"})) == 0
    for value in ("", "items 1-2/3", "bytes x-2/3", "bytes 1-2/*"):
        with pytest.raises(ProtocolError, match="bad Content-Range"):
            content_range(answer(206, **{"Content-Range": value}))
    for value in ("", "bytes */many"):
        with pytest.raises(ProtocolError, match="on 416"):
            range_total(answer(416, **{"Content-Range": value}))


# --------------------------------------------------------------------------- writing


def test_small_writes_go_inline_within_the_budget() -> None:
    changes = [write("a", 10), Delete("b"), write("c", 100), write("d", 10), write("e", 5)]
    # "c" is over inline_max; "d" no longer fits the budget left after "a"; "e" does.
    assert inline_writes(changes, inline_max=50, budget=16) == {
        0: Path("/spool/a"),
        4: Path("/spool/e"),
    }


def test_a_write_of_the_content_it_expects_sends_none() -> None:
    """A new mode or mtime of a file whose content the server has: named, not sent."""
    touch = write("t", 5, expect=HASH, mtime_ns=7)
    assert keeps_content(touch) and not keeps_content(write("w", 5, expect="other"))
    assert inline_writes([touch, write("w", 5)], inline_max=50, budget=100) == {1: Path("/spool/w")}
    assert operation(touch, inline=None) == {
        "op": "write",
        "path": "t",
        "blob": HASH,
        "expect": HASH,
        "mtime_ns": 7,
    }


def test_operations_of_every_change() -> None:
    made = write(mode=0o100755, expect=Expect.ABSENT, mtime_ns=-(10**18) - 1)
    assert operation(made, inline=b"hi!") == {
        "op": "write",
        "path": "a.txt",
        "content_b64": base64.b64encode(b"hi!").decode(),
        "mode": 0o755,
        "mtime_ns": -(10**18) - 1,
        "expect": "absent",
    }
    assert operation(write(expect="v1"), inline=None) == {
        "op": "write",
        "path": "a.txt",
        "blob": HASH,
        "expect": "v1",
    }
    assert operation(Delete("a"), inline=None) == {"op": "delete", "path": "a"}
    assert operation(Rename("a", "b", expect="v1", expect_to=Expect.ABSENT), inline=None) == {
        "op": "rename",
        "from": "a",
        "to": "b",
        "expect": "v1",
        "expect_to": "absent",
    }
    assert operation(Symlink("l", "a"), inline=None) == {
        "op": "symlink",
        "path": "l",
        "target": "a",
        "expect": "absent",
    }
    assert operation(Mkdir("d"), inline=None) == {"op": "mkdir", "path": "d"}


def test_commit_body() -> None:
    ops = [{"op": "mkdir", "path": "d"}]
    assert commit_body(ops, author="me@host", base=None, key=None) == {
        "message": "repomount: 1 change",
        "author": "me@host",
        "operations": ops,
    }
    body = commit_body(ops * 2, author="me@host", base="h1", key="k")
    assert body["message"] == "repomount: 2 changes"
    assert (body["base"], body["idempotency_key"]) == ("h1", "k")


def test_batch_key_needs_every_change_keyed_and_tells_batches_apart() -> None:
    keyed = [Delete("a", key="k1"), Delete("b", key="k2")]
    assert batch_key("r", keyed) == batch_key("r", list(keyed))
    assert batch_key("r", keyed) != batch_key("other", keyed)
    assert batch_key("r", keyed) != batch_key("r", keyed[::-1])
    # Lengths are part of the digest: ("ab", "c") is not ("a", "bc").
    split = [Delete("x", key="ab"), Delete("y", key="c")]
    assert batch_key("r", split) != batch_key("r", [Delete("x", key="a"), Delete("y", key="bc")])
    assert batch_key("r", [Delete("a", key="k1"), Delete("b")]) is None


def test_applied_commit() -> None:
    result = applied({"head": "h2", "results": [{"version": "v"}, {}]}, 2)
    assert result.head == "h2"
    assert result.outcomes == [Applied("v"), Applied(None)]


@pytest.mark.parametrize(
    "data",
    [
        {"results": []},  # no head
        {"head": "h"},  # no results
        {"head": "h", "results": [{}]},  # one result for two operations
        {"head": "h", "results": ["v", "v"]},
    ],
)
def test_malformed_commit_answers_are_protocol_errors(data: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="unexpected answer from the server"):
        applied(data, 2)


def test_a_refused_commit_blames_its_conflicts() -> None:
    error = Conflict("POST: 409 conflict", status=409, code="conflict")
    details = {"conflicts": [{"index": 1, "current": "v9"}, {"index": 2, "current": None}]}
    first, second, third = refused(error, details, 3)
    assert isinstance(first, Failed) and isinstance(first.error, Aborted)
    assert (second, third) == (Conflicted("v9"), Conflicted(None))
    for bad in ({}, {"conflicts": []}, {"conflicts": [{"current": "v"}]}):
        with pytest.raises(ProtocolError):
            refused(error, bad, 3)
    with pytest.raises(ProtocolError):  # an index past the batch
        refused(error, {"conflicts": [{"index": 3}]}, 3)


def test_a_refused_commit_blames_one_operation_or_raises() -> None:
    error = NotFound("POST: 404", status=404, code="unknown_blob")
    outcomes = refused(error, {"index": 0}, 2)
    blamed = outcomes[0]
    # A collected blob is uploaded again on the next try: retryable.
    assert isinstance(blamed, Failed) and isinstance(blamed.error, Unavailable)
    assert isinstance(outcomes[1], Failed) and isinstance(outcomes[1].error, Aborted)
    missing = NotFound("POST: 404", status=404, code="no_such_repo")
    for details in ({}, {"index": 2}, {"index": -1}, {"index": "0"}):
        with pytest.raises(NotFound):
            refused(missing, details, 2)


# --------------------------------------------------------------------------- change feed


def test_feed_request_caps_the_wait_and_lengthens_the_timeout() -> None:
    assert feed_request(None, 0) == ({}, 0.0)
    params, held = feed_request("h1", 1000)
    assert params == {"since": "h1", "wait": f"{MAX_WAIT:g}"} and held == MAX_WAIT
    assert Timeouts().holding(held).answer == Timeouts().answer + MAX_WAIT
    assert feed_request(None, -5) == ({}, 0.0)


def test_change_batch_and_its_malformed_answers() -> None:
    batch = change_batch(
        {
            "head": 3,
            "changes": [{"path": "a", "op": "write", "version": 1}, {"path": "b", "op": "delete"}],
        }
    )
    assert batch.head == "3"
    assert [(c.path, c.op, c.version) for c in batch.changes] == [
        ("a", "write", "1"),
        ("b", "delete", None),
    ]
    for bad in ({"changes": []}, {"head": "h"}, {"head": "h", "changes": "a"}):
        with pytest.raises(ProtocolError, match="the server"):
            change_batch(bad)
    # An entry the mount could not show is skipped; the feed goes on.
    odd = [{"path": "a", "op": "chmod"}, {"path": "../b", "op": "write"}, {"op": "delete"}]
    batch = change_batch({"head": "h", "changes": [*odd, {"path": "c", "op": "mkdir"}]})
    assert [(c.path, c.op) for c in batch.changes] == [("c", "mkdir")]


def test_a_change_names_the_commit_that_made_it_where_the_feed_says() -> None:
    batch = change_batch(
        {
            "head": "9",
            "changes": [
                {"path": "a", "op": "write", "version": "v", "head": "8"},
                {"path": "b", "op": "write", "version": "v", "head": 9},
                {"path": "c", "op": "write", "version": "v"},  # (an older server)
                {"path": "d", "op": "write", "version": "v", "head": ["x"]},  # (unusable)
            ],
        }
    )
    assert [c.head for c in batch.changes] == ["8", "9", None, None]
