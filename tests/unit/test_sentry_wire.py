"""Sentry's wire format on both sides: names as paths (and back), the file list parsed
(a bad entry skipped, a malformed answer a ProtocolError), `Link` cursors, the tree of a
release, upload bodies, and the face's cursors and release versions. No I/O."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest

from repomount.remotes.base import Entry, ProtocolError
from repomount.remotes.sentry_wire import (
    Artifact,
    ReleaseTree,
    artifact,
    artifacts,
    content_type,
    name_of_path,
    next_cursor,
    path_of_name,
    upload_form,
)
from repomount.server.faces import sentry_wire as face
from repomount.server.faces.sentry_form import parse_form

SHA1 = hashlib.sha1(b"x").hexdigest()


def item(**fields: Any) -> dict[str, Any]:
    base = {"id": "7", "name": "~/a.js", "dist": None, "sha1": SHA1, "size": 1, "headers": {}}
    return base | {"dateCreated": "2024-01-02T03:04:05.678901Z"} | fields


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("~/static/app.js", "~/static/app.js"),
        ("https://cdn.example.com/a/app.js", "https:/cdn.example.com/a/app.js"),
        ("app.js", "app.js"),
        ("~/a//b.js", None),
        ("/static/app.js", None),
        ("~/../x.js", None),
        ("~/a/", None),
        ("https:/cdn/x.js", None),  # would read back as https://cdn/x.js
        ("https:///x.js", None),
        ("", None),
    ],
)
def test_names_and_paths(name: str, path: str | None) -> None:
    """Client and server agree; a name shown as a path reads back as itself."""
    assert path_of_name(name) == face.path_of_name(name) == path
    if path is not None:
        assert name_of_path(path) == face.name_of_path(path) == name


def test_the_list_parsed_with_bad_entries_skipped(caplog: pytest.LogCaptureFixture) -> None:
    page = [
        item(),
        item(id=8, name="https://cdn/x.js", dist="d1", sha1=SHA1.upper()),
        item(name="~//bad.js"),
        item(sha1="nope"),
        item(size=-1),
        item(headers={"a": 1}),
        "not an object",
    ]
    with caplog.at_level(logging.WARNING):
        found = artifacts(page)
    assert found == [
        Artifact("7", "~/a.js", None, SHA1, 1, {}, 1704164645.678901),
        Artifact("8", "https:/cdn/x.js", "d1", SHA1, 1, {}, 1704164645.678901),
    ]
    assert found[1].name == "https://cdn/x.js"
    assert len([r for r in caplog.records if "skipping entry" in r.message]) == 5
    with pytest.raises(ProtocolError, match="Sentry"):
        artifacts({"detail": "not a list"})
    with pytest.raises(ProtocolError, match="Sentry"):
        artifact(item(name="~//bad.js"))


def test_next_cursor_follows_results() -> None:
    link = (
        '<http://h/api/0/x/?&cursor=100:-1:1>; rel="previous"; results="false"; '
        'cursor="100:-1:1", <http://h/api/0/x/?&cursor=100:1:0>; rel="next"; '
        'results="true"; cursor="100:1:0"'
    )
    assert next_cursor(link) == "100:1:0"
    assert next_cursor(link.replace('results="true"', 'results="false"')) is None
    assert next_cursor(None) is None and next_cursor("garbage") is None


def test_the_tree_of_a_release() -> None:
    tree = ReleaseTree(
        [Artifact("1", "~/s/a.js", None, SHA1, 1), Artifact("2", "~/b.js", None, SHA1, 2)]
    )
    assert tree.entry("~") == Entry("~", "dir")
    assert tree.entry("~/b.js") == Entry("~/b.js", "file", size=2, version=SHA1)
    assert tree.entry("~/nope") is None
    root = tree.listing("", recursive=False)
    assert root == [Entry("~", "dir")]
    everything = tree.listing("", recursive=True)
    assert everything is not None
    assert [e.path for e in everything] == ["~", "~/b.js", "~/s", "~/s/a.js"]
    assert tree.listing("~/b.js", recursive=False) is None
    assert [a.id for a in tree.under("~")] == ["2", "1"]


def test_a_name_that_is_also_a_directory_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    """Sentry's names are flat: `~/a.js` and `~/a.js/x` may both exist. A path cannot be
    a file and a directory: the directory is shown, the file left out (logged)."""
    with caplog.at_level(logging.WARNING):
        tree = ReleaseTree(
            [Artifact("1", "~/a.js", None, SHA1, 1), Artifact("2", "~/a.js/x", None, SHA1, 1)]
        )
    assert tree.listing("~", recursive=False) == [Entry("~/a.js", "dir")]
    assert tree.entry("~/a.js") == Entry("~/a.js", "dir")
    assert "~/a.js" not in tree.files
    assert any("~/a.js" in r.message for r in caplog.records)


def test_upload_form_round_trips_through_the_face(tmp_path: Any) -> None:
    form = upload_form(
        "~/s/app.js",
        "d1",
        content_type("~/s/app.js"),
        {"Content-Type": "old/type", "Sourcemap": "app.js.map", "Bad": "a\nb"},
    )
    body = tmp_path / "body"
    body.write_bytes(form.head + b"content\r\n--not-the-boundary" + form.tail)
    parsed = parse_form(body, form.content_type)
    assert parsed.fields == {
        "name": ["~/s/app.js"],
        "dist": ["d1"],
        "header": ["Sourcemap:app.js.map"],
    }
    part = parsed.files["file"]
    assert (part.filename, part.content_type) == ("app.js", "application/javascript")
    assert body.read_bytes()[part.start : part.end] == b"content\r\n--not-the-boundary"
    assert content_type("x.js.map") == "application/json"
    assert content_type("x.unknownext") == "application/octet-stream"
    assert content_type("x.js", {"content-type": "kept/type"}) == "kept/type"


def test_the_face_reads_cursors_as_sentry() -> None:
    assert face.page_of({}) == (0, 0, 100)
    assert face.page_of({"cursor": "100:3:0"}) == (300, 3, 100)
    assert face.page_of({"cursor": "2:1:0", "per_page": "2"}) == (2, 1, 2)
    for query in (
        {"cursor": "1:2"},
        {"cursor": "a:b:c"},
        {"per_page": "0"},
        {"cursor": "1:-1:1"},
        {"cursor": "1e999:1:0"},  # was a 500 (OverflowError)
        {"cursor": "nan:1:0"},
    ):
        with pytest.raises(face.SentryError) as refused:
            face.page_of(query)
        assert refused.value.status == 400


@pytest.mark.parametrize("version", ["1.0", "web@1.2.3+abc", "a b"])
def test_release_versions_sentry_allows(version: str) -> None:
    assert face.check_version(version) == version


@pytest.mark.parametrize("version", ["", "latest", "LATEST", ".", "..", "a/b", "a\\b", "a\nb", " "])
def test_release_versions_sentry_refuses(version: str) -> None:
    with pytest.raises(face.SentryError) as refused:
        face.check_version(version)
    assert refused.value.status == 400 and "version" in refused.value.body
