"""Issue 17 #5: one bad entry from a remote must not blind a whole directory.

Every adapter's listing entries pass through `remotes/validate.py`: an entry of an
unknown type, with a NaN, string or out-of-range time, a negative or huge size, an
unusable name or symlink target is skipped with one log line naming it, and the rest
of the listing is served. So is a name holding a control character (security probe: a
remote's `esc\x1b[31mred` and `newline\nname` showed in the mount), in a listing and in
a change-feed entry, on every adapter. A property test throws arbitrary JSON at each adapter's
entry parser through the helper: nothing but the documented skip may come out.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repomount.paths import control_character_problem, validate_path
from repomount.remotes import (
    native_wire,
    oxen_wire,
    relace_wire,
    sentry_wire,
    terminaluse_wire,
    validate,
)
from repomount.remotes.base import Entry
from repomount.remotes.validate import MAX_SIZE, BadEntry

GOOD = {"path": "ok.txt", "type": "file", "size": 3, "version": "v1", "mtime": 1.7e9, "mode": 420}

BAD_NATIVE_ENTRIES = [
    {"path": "pipe", "type": "fifo"},
    {"path": "nan", "type": "file", "mtime": math.nan},
    {"path": "inf", "type": "file", "mtime": math.inf},
    {"path": "late", "type": "file", "mtime": 1e300},
    {"path": "text-time", "type": "file", "mtime": "yesterday"},
    {"path": "digits-time", "type": "file", "mtime": "1700000000"},
    {"path": "negative", "type": "file", "size": -1},
    {"path": "huge", "type": "file", "size": 10**30},
    {"path": "bool", "type": "file", "size": True},
    {"path": "a/../b", "type": "file"},
    {"path": "..", "type": "dir"},
    {"path": "", "type": "dir"},
    {"path": "nul\0name", "type": "file"},
    {"path": "x" * 256, "type": "file"},
    {"path": "lone\ud800", "type": "file"},
    {"path": "esc\x1b[31mred", "type": "file"},
    {"path": "newline\nname", "type": "file"},
    {"path": "d/tab\there", "type": "file"},
    {"path": "del\x7f", "type": "dir"},
    {"path": "link", "type": "symlink", "target": "t" * 4097},
    {"path": "link2", "type": "symlink", "target": "a\0b"},
    {"path": "link3", "type": "symlink"},
    {"path": "mode", "type": "file", "mode": 1 << 20},
    {"path": "version", "type": "file", "version": {"sha": 1}},
    {"path": "version2", "type": "file", "version": "\ud800"},
    {"path": 5, "type": "file"},
    {"type": "file"},
    ["a", "list"],
    None,
]


@pytest.mark.parametrize("bad", BAD_NATIVE_ENTRIES, ids=range(len(BAD_NATIVE_ENTRIES)))
def test_a_bad_entry_is_skipped_with_one_line_naming_it(
    bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="repomount.remotes.validate")
    page = native_wire.tree_page({"head": "1", "entries": [bad, GOOD]})
    assert [e.path for e in page.entries] == ["ok.txt"]
    (record,) = caplog.records
    line = record.getMessage()
    assert "\n" not in line and len(line) < 300
    assert line.startswith("native server: skipping entry ") and line.isprintable()
    if isinstance(bad, dict) and isinstance(bad.get("path"), str) and bad["path"].isalpha():
        assert repr(bad["path"])[:60] in line  # named by its path (bounded)


def test_terminal_use_and_relace_entries_go_through_the_same_checks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    files = [
        {
            "path": "/ok",
            "size_bytes": 1,
            "checksum": "sha256:ab",
            "modified_at": "2024-01-01T00:00:00Z",
        },
        {"path": "/neg", "size_bytes": -5},
        {"path": "/when", "modified_at": "9999-12-31T00:00:00Z"},
        {"path": "/nul\0", "size_bytes": 1},
        {"path": "/a/../b"},
    ]
    entries, held, _ = terminaluse_wire.page({"files": files, "total_count": 5})
    assert [e.path for e in entries] == ["ok"] and held == 5
    clone = relace_wire.clone_files(
        {"files": [{"filename": "ok", "content": "x"}, {"filename": "a//b", "content": "x"}]}
    )
    assert list(clone) == ["ok"]
    assert sum("skipping entry" in r.getMessage() for r in caplog.records) == 5


CONTROL_NAMES = ["esc\x1b[31mred", "new\nline", "bell\x07", "del\x7f", "cr\r"]


def test_a_name_with_a_control_character_is_skipped_by_every_adapter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What no mount may make and repomount's server refuses to store never shows
    either, whichever adapter lists it; C1 controls (U+0080-U+009F) are ordinary
    characters of a name there and here."""
    caplog.set_level(logging.WARNING)
    c1 = "c1\x9bname"
    native = native_wire.tree_page(
        {"head": "1", "entries": [{**GOOD, "path": n} for n in [*CONTROL_NAMES, c1]]}
    )
    assert [e.path for e in native.entries] == [c1]
    feed = native_wire.change_batch(
        {
            "head": "2",
            "changes": [{"path": n, "op": "write", "version": "v"} for n in CONTROL_NAMES],
        }
    )
    assert feed.changes == []
    files = [{"path": f"/{n}", "size_bytes": 1} for n in [*CONTROL_NAMES, "ok"]]
    tu, _, _ = terminaluse_wire.page({"files": files, "total_count": len(files)})
    assert [e.path for e in tu] == ["ok"]
    clone = [{"filename": n, "content": "x"} for n in [*CONTROL_NAMES, "ok"]]
    assert list(relace_wire.clone_files({"files": clone})) == ["ok"]
    oxen = [{"filename": n, "is_dir": False, "size": 1, "hash": "ab"} for n in CONTROL_NAMES]
    assert oxen_wire.dir_page({"entries": oxen}, "").entries == []
    sentry = [
        {"id": i, "name": f"~/{n}", "sha1": "0" * 40, "size": 1}
        for i, n in enumerate([*CONTROL_NAMES, "ok"])
    ]
    assert [a.path for a in sentry_wire.artifacts(sentry)] == ["~/ok"]
    skipped = [r.getMessage() for r in caplog.records if "skipping entry" in r.getMessage()]
    assert len(skipped) == 6 * len(CONTROL_NAMES)
    assert all("control character" in line and line.isprintable() for line in skipped)


# --------------------------------------------------------------------------- properties

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["file", "dir", "symlink", "fifo", "", "..", ".", "a/b", "/", "\0"]),
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_KEYS = ["path", "type", "size", "version", "mtime", "mode", "target", "filename", "content",
         "size_bytes", "checksum", "modified_at", "is_directory",
         "id", "name", "dist", "sha1", "headers", "dateCreated"]  # fmt: skip
_raw_entries = st.one_of(_json, st.dictionaries(st.sampled_from(_KEYS), _json, max_size=8))

_PARSERS = {
    "native": native_wire._entry,
    "terminaluse": terminaluse_wire._entry,
    "sentry": lambda item: sentry_wire._artifact(item).entry(),
}


def assert_showable(entry: Entry) -> None:
    """What the vfs counts on for every entry an adapter hands it."""
    validate_path(entry.path)
    assert control_character_problem(entry.path) is None
    assert entry.kind in ("file", "dir", "symlink")
    assert isinstance(entry.size, int) and 0 <= entry.size <= MAX_SIZE
    if entry.mtime is not None:
        assert math.isfinite(entry.mtime)
        assert -(1 << 63) < int(entry.mtime * 1e9) < (1 << 63)  # the kernel's nanoseconds
    if entry.version is not None:
        entry.version.encode("utf-8")
    if entry.kind == "symlink":
        assert entry.target and "\0" not in entry.target
        assert len(entry.target.encode("utf-8")) <= 4096


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.lists(_raw_entries, max_size=6), adapter=st.sampled_from(sorted(_PARSERS)))
def test_any_listing_parses_to_showable_entries_or_skips(raw: list[Any], adapter: str) -> None:
    for entry in validate.entries(raw, _PARSERS[adapter], source=adapter):
        assert_showable(entry)


@settings(max_examples=150)
@given(raw=st.lists(_raw_entries, max_size=6))
def test_any_clone_parses_or_skips(raw: list[Any]) -> None:
    for path in relace_wire.clone_files({"files": raw}):
        validate_path(path)


@settings(max_examples=300)
@given(
    path=st.text(max_size=300) | st.lists(st.text(max_size=60), max_size=6).map("/".join),
    kind=st.sampled_from(["file", "dir", "symlink"]),
    target=st.none() | st.text(max_size=50),
)
def test_any_path_is_accepted_or_refused_with_the_documented_error(
    path: str, kind: Any, target: str | None
) -> None:
    try:
        entry = validate.checked(Entry(path, kind, target=target if kind == "symlink" else None))
    except BadEntry:
        return
    assert_showable(entry)


def test_setuid_setgid_and_sticky_bits_are_never_taken_from_a_remote() -> None:
    """The security probe of this stop: an entry listed with mode 0o4755 showed as
    `-rwsr-xr-x`, and `cp -a` out of the mount as root made a real setuid-root file."""
    page = native_wire.tree_page(
        {
            "head": "1",
            "entries": [
                {**GOOD, "path": "suid", "mode": 0o4755},
                {**GOOD, "path": "all", "mode": 0o7777},
                {"path": "d", "type": "dir", "mode": 0o1777},
                GOOD,
            ],
        }
    )
    assert {e.path: e.mode for e in page.entries} == {
        "suid": 0o755, "all": 0o777, "d": 0o777, "ok.txt": 0o644
    }  # fmt: skip
