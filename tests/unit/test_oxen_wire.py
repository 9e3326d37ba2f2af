"""Oxen's wire format and batch planning as pure functions (remotes/oxen_wire.py,
remotes/oxen_plan.py), and the server's multipart parser reading what the adapter sends."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from repomount.remotes.base import (
    Aborted,
    Applied,
    Conflict,
    Conflicted,
    Delete,
    Entry,
    Expect,
    Failed,
    InvalidPath,
    Mkdir,
    ProtocolError,
    Rename,
    Symlink,
    Unsupported,
    Write,
)
from repomount.remotes.oxen_plan import DIR, Copy, check
from repomount.remotes.oxen_wire import (
    Upload,
    add_files_body,
    commit_of_branch,
    dir_page,
    meta_entry,
    url_path,
    xxh3_hex,
)
from repomount.server.multipart import parse_multipart


def entry(name: str, *, is_dir: bool = False, size: int = 0, hash: str = "", **extra: object):
    return {"filename": name, "is_dir": is_dir, "size": size, "hash": hash, **extra}


def test_xxh3_is_oxens_form() -> None:
    assert xxh3_hex(b"hello world\n") == "eefac9d87100cd1336b2e733a5484425"
    assert all(not xxh3_hex(bytes([n])).startswith("0") for n in range(256))  # no padding


def test_a_page_with_depth_is_flattened_and_names_its_commit() -> None:
    data = {
        "dir": {"resource": {"commit": {"id": "c0ffee"}}},
        "entries": [
            entry("a.txt", size=3, hash="ABC"),
            entry("d", is_dir=True, size=9, children=[entry("b.bin", size=9, hash="0f")]),
        ],
        "total_pages": 2,
    }
    page = dir_page(data, "top")
    assert page.head == "c0ffee" and page.total_pages == 2
    assert page.entries == [
        Entry("top/a.txt", "file", size=3, version="abc"),
        Entry("top/d", "dir"),
        Entry("top/d/b.bin", "file", size=9, version="f"),
    ]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"entries": [{"filename": "x"}]},
        {"entries": [entry("../up", size=1, hash="a")]},
        {"entries": [entry("a/b", size=1, hash="a")]},
        {"entries": [entry("x", size="big", hash="a")]},
        {"entries": "nope"},
    ],
)
def test_malformed_pages_are_protocol_errors(data: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        dir_page(data, "")


def test_meta_and_branch_answers() -> None:
    got = meta_entry({"entry": entry("x.csv", size=4, hash="12")}, "d/x.csv")
    assert got == Entry("d/x.csv", "file", size=4, version="12")
    assert meta_entry({"entry": entry("d", is_dir=True)}, "d") == Entry("d", "dir")
    assert commit_of_branch({"branch": {"name": "main", "commit_id": "abc"}}) == "abc"
    for bad in ({}, {"entry": None}, {"branch": {"name": "main"}}):
        with pytest.raises(ProtocolError):
            meta_entry(bad, "p") if "branch" not in bad else commit_of_branch(bad)


def test_url_paths_keep_a_plus_sign() -> None:
    assert url_path("a b/c+d%.txt") == "a%20b/c%2Bd%25.txt"


def test_the_server_reads_the_files_the_adapter_sends() -> None:
    files = [Upload("dir/ä b.txt", b"one\r\n--x"), Upload("top.bin", bytes(range(256)))]
    body = add_files_body(files, "bnd")
    parts = parse_multipart(body, "multipart/form-data; boundary=bnd")
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("file[]", "dir/ä b.txt", "application/gzip"),
        ("file[]", "top.bin", "application/gzip"),
    ]
    assert [gzip.decompress(p.data) for p in parts] == [f.data for f in files]
    for bad in (b"", b"--bnd\r\nno headers", b"--bnd\r\n\r\nx\r\n--bnd--"):
        with pytest.raises(ValueError):
            parse_multipart(bad, "multipart/form-data; boundary=bnd")
    with pytest.raises(ValueError):
        parse_multipart(body, "application/json")


# --------------------------------------------------------------------------- planning


def w(path: str, expect: object = Expect.ABSENT) -> Write:
    return Write(path, Path("/nonexistent"), 1, "0" * 64, expect)  # type: ignore[arg-type]


TREE = {"a.txt": "1", "d": DIR, "d/x": "2", "d/e": DIR, "d/e/y": "3"}


def test_a_batch_that_passes_stages_its_last_state() -> None:
    changes = [
        w("new.txt"),
        w("a.txt", expect="1"),
        Delete("d/e/y", expect="3"),
        Delete("d/e", expect=Expect.ANY),
        Rename("d/x", "moved/x", expect="2", expect_to=Expect.ABSENT),
        Mkdir("empty"),
    ]
    plan = check(changes, TREE, {0: "n", 1: "m"})
    assert plan.outcomes == [None, None, None, None, None, Applied(None)] and not plan.aborted
    assert plan.adds == {"new.txt": changes[0], "a.txt": changes[1], "moved/x": Copy("d/x", "2")}
    # d/e's removal covers d/e/y; the server drops d, left empty (Oxen keeps none)
    assert plan.removes == {"d/e", "d/x"}
    result = plan.result("head")
    assert result.outcomes[:5] == [
        Applied("n"),
        Applied("m"),
        Applied(None),
        Applied(None),
        Applied("2"),
    ]


def test_a_rename_onto_a_directory_the_batch_emptied_removes_only_its_files() -> None:
    """Its last files deleted earlier in the batch, `d` is no directory (Oxen keeps
    none empty): the rename onto it goes, and the removals name the files, never `d`
    itself (a file someone adds below it meanwhile is not ours to remove)."""
    tree = {"d": DIR, "d/x": "2", "d/e": DIR, "d/e/y": "3", "s": DIR, "s/f": "4"}
    changes = [
        Delete("d/x", expect="2"),
        Delete("d/e/y", expect="3"),
        Delete("d/e", expect=Expect.ANY),
        Rename("s", "d", expect=Expect.ANY, expect_to=Expect.ABSENT),
    ]
    plan = check(changes, tree, {})
    assert plan.outcomes == [None, None, None, None] and not plan.aborted
    assert plan.adds == {"d/f": Copy("s/f", "4")}
    assert plan.removes == {"d/x", "d/e", "s"}


def test_a_rename_onto_a_directory_made_elsewhere_is_a_conflict() -> None:
    """The mount renamed a directory onto a name it saw free (`expect_to` absent), and
    another client made a directory with files there meanwhile: a conflict, as on
    repomount's server (the mount then keeps its directory beside the remote's), not a
    refusal that held the rename, and all the mount wrote in the directory, for ever."""
    tree = {"d": DIR, "d/x": "2", "s": DIR, "s/f": "4"}
    plan = check([Rename("s", "d", expect=Expect.ANY, expect_to=Expect.ABSENT)], tree, {})
    assert plan.aborted
    [outcome] = plan.result("h").outcomes
    assert outcome == Conflicted(None)
    # (without the precondition, onto a directory that is not empty: refused as before)
    plan = check([Rename("s", "d", expect=Expect.ANY, expect_to=Expect.ANY)], tree, {})
    [outcome] = plan.result("h").outcomes
    assert isinstance(outcome, Failed) and isinstance(outcome.error, InvalidPath)


def test_a_directory_with_files_the_batch_does_not_remove_is_not_deleted() -> None:
    """Oxen removes a directory with everything in it: a file someone else added (or
    one no mount can show) would go with an rmdir of what the mount saw empty. Refused
    as repomount's server refuses it (directory_not_empty), and nothing is removed."""
    tree = {"d": DIR, "d/mine": "1", "d/theirs": "2"}
    plan = check([Delete("d/mine", expect="1"), Delete("d", expect=Expect.ANY)], tree, {})
    assert plan.aborted
    mine, rmdir = plan.result("h").outcomes
    assert isinstance(mine, Failed) and isinstance(mine.error, Aborted)
    assert isinstance(rmdir, Failed) and isinstance(rmdir.error, Conflict)
    assert rmdir.error.code == "directory_not_empty"


def test_a_listing_keeps_what_it_cannot_show_for_the_plan() -> None:
    page = dir_page(
        {
            "entries": [
                {"filename": "ok.txt", "is_dir": False, "size": 1, "hash": "ab"},
                {"filename": "esc\x1b[31mred", "is_dir": False, "size": 1, "hash": "cd"},
            ],
            "total_pages": 1,
        },
        "d",
    )
    assert [e.path for e in page.entries] == ["d/ok.txt"]
    assert page.hidden == ["d/esc\x1b[31mred"]


def test_one_conflict_aborts_the_batch() -> None:
    plan = check(
        [w("a.txt", expect="0"), w("b.txt"), Delete("d/x", expect="2")], TREE, {0: "x", 1: "y"}
    )
    assert plan.aborted
    first, second, third = plan.result("h").outcomes
    assert first == Conflicted("1")
    for outcome in (second, third):
        assert isinstance(outcome, Failed) and isinstance(outcome.error, Aborted)


def test_writes_below_a_file_or_onto_a_directory_are_refused() -> None:
    for path in ("a.txt/below", "d"):
        (outcome, _) = (
            check([w(path, Expect.ANY), w("ok.txt")], TREE, {0: "x", 1: "y"}).result("h").outcomes
        )
        assert isinstance(outcome, Failed) and isinstance(outcome.error, InvalidPath)
        assert not outcome.retryable


def test_later_changes_see_earlier_ones() -> None:
    changes = [w("a.txt", expect="1"), w("a.txt", expect="m"), Delete("a.txt", expect="m2")]
    plan = check(changes, TREE, {0: "m", 1: "m2"})
    assert not plan.aborted and plan.adds == {} and plan.removes == {"a.txt"}
    plan = check([Delete("d/x"), w("d/x")], TREE, {1: "z"})
    assert plan.adds == {"d/x": plan.adds["d/x"]} and plan.removes == set()


def test_a_directory_rename_moves_every_file_and_symlinks_are_refused() -> None:
    plan = check([Rename("d", "z")], TREE, {})
    assert plan.adds == {"z/x": Copy("d/x", "2"), "z/e/y": Copy("d/e/y", "3")}
    assert plan.removes == {"d"}
    (outcome,) = check([Symlink("l", "a.txt")], TREE, {}).outcomes
    assert isinstance(outcome, Failed) and isinstance(outcome.error, Unsupported)
    (outcome,) = check([Rename("a.txt", "d")], TREE, {}).outcomes
    assert isinstance(outcome, Failed) and isinstance(outcome.error, InvalidPath)


def test_an_entry_a_filesystem_cannot_show_is_skipped_not_the_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    long = "n" * 300  # (a name is at most 255 bytes)
    data = {"entries": [entry(long, size=1, hash="a"), entry("ok.txt", size=2, hash="b")]}
    page = dir_page(data, "")
    assert page.entries == [Entry("ok.txt", "file", size=2, version="b")]
    assert "skipping entry" in caplog.text
