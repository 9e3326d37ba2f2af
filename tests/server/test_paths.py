"""Path validation, table-driven: the pure function and the server's 422 answers."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from repomount.paths import (
    InvalidPathError,
    _check_rules,
    _plainly_valid,
    ancestors_of,
    parent_of,
    shown,
    validate_path,
)

VALID = [
    "a",
    "a/b/c.txt",
    ".hidden",
    "..a",
    "a..",
    "...",
    "dir/.git/config",
    "with space/and\ttab",
    "ünïcødé/文件",
    "x" * 255,
    "/".join(["d" * 200] * 20),  # 4019 bytes
    "a\\b",
]

INVALID = [
    ("", "empty"),
    ("/a", "leading '/'"),
    ("a/", "empty component"),
    ("a//b", "empty component"),
    ("/", "leading '/'"),
    (".", "'.' component"),
    ("..", "'..' component"),
    ("a/./b", "'.' component"),
    ("a/../b", "'..' component"),
    ("../a", "'..' component"),
    ("a/..", "'..' component"),
    ("a\x00b", "NUL"),
    ("x" * 256, "256-byte name"),
    ("é" * 128, "256-byte name"),  # 128 characters, 256 bytes
    ("/".join(["d" * 200] * 21), "limit is 4096"),
    ("a/\udcff", "UTF-8"),
]


@pytest.mark.parametrize("path", VALID)
def test_valid_paths_are_returned_unchanged(path: str) -> None:
    assert validate_path(path) == path


@pytest.mark.parametrize(("path", "reason"), INVALID)
def test_invalid_paths_say_why(path: str, reason: str) -> None:
    with pytest.raises(InvalidPathError, match=reason.replace("(", r"\(")) as info:
        validate_path(path)
    assert isinstance(info.value, ValueError)
    assert info.value.path == path


def test_a_long_invalid_path_is_quoted_cut_short() -> None:
    """A message must not echo a name whole: it can be as long as a request (or, from
    an archive's header, many times longer)."""
    with pytest.raises(InvalidPathError) as info:
        validate_path("a" * 1_000_000)
    assert len(str(info.value)) < 300 and "(1000000 characters)" in str(info.value)
    assert info.value.path == "a" * 1_000_000  # (the caller still has it whole)
    assert shown("a/b") == "'a/b'"


def test_parents_and_ancestors() -> None:
    assert parent_of("a") == ""
    assert parent_of("a/b/c") == "a/b"
    assert ancestors_of("a/b/c") == ["a", "a/b"]
    assert ancestors_of("a") == []


# In URLs, '.' and '..' must be percent-encoded or the client normalises them away.
HTTP_INVALID = ["a/%2E%2E/b", "%2E", "a//b", "a/", "a%00b", "x" * 256]


@pytest.mark.parametrize("raw", HTTP_INVALID)
def test_server_refuses_invalid_paths_with_422(client: httpx.Client, repo: str, raw: str) -> None:
    url = f"/v1/repos/{repo}/files/{raw}"
    for method in ("PUT", "GET", "DELETE"):
        r = client.request(method, url, content=b"x" if method == "PUT" else None)
        assert r.status_code == 422, (method, raw, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid_path"
        assert "invalid path" in error["message"]


@pytest.mark.parametrize(("path", "reason"), INVALID[:-1])
def test_commit_refuses_invalid_paths_with_422(
    client: httpx.Client, repo: str, path: str, reason: str
) -> None:
    ops = [{"op": "mkdir", "path": "fine"}, {"op": "write", "path": path, "content_b64": ""}]
    r = client.post(f"/v1/repos/{repo}/commits", json={"operations": ops})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_path"
    assert error["index"] == 1
    assert client.get(f"/v1/repos/{repo}").json()["head"] == "0"


# Paths made of the parts the rules are about: names, dots, slashes, NUL, non-ASCII,
# and long names near the limits.
_PATHISH = st.lists(
    st.sampled_from(["a", "é", "/", ".", "..", "\x00", " ", "x" * 200, "y" * 255, "z" * 256])
).map("".join)


@given(st.one_of(_PATHISH, st.text(max_size=300)))
def test_the_quick_check_never_lets_through_what_the_rules_refuse(path: str) -> None:
    """validate_path's ASCII shortcut answers only "valid", and only when the full rules
    agree: whatever the shortcut passes, _check_rules passes too."""
    if _plainly_valid(path):
        assert _check_rules(path) == path
    try:
        full: str | None = _check_rules(path)
    except InvalidPathError:
        full = None
    try:
        assert validate_path(path) == full
    except InvalidPathError:
        assert full is None


def test_a_rename_that_takes_a_path_below_past_the_limit_is_refused_with_422(
    client: httpx.Client, repo: str
) -> None:
    """A directory's rename moves every path below it: one that would pass 4096 bytes is
    refused (422), as a write of it would be. Before, it was taken, and every listing
    then left the file out."""
    deep = "/".join(["d" * 200] * 20)  # 4019 bytes
    ops = [{"op": "write", "path": f"top/{deep}/f", "content_b64": "eA=="}]  # 4025
    client.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).raise_for_status()
    head = client.get(f"/v1/repos/{repo}").json()["head"]
    ops = [{"op": "rename", "from": "top", "to": "t" * 100}]  # 4122
    r = client.post(f"/v1/repos/{repo}/commits", json={"operations": ops})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_path"
    assert len(r.json()["error"]["message"]) < 1000
    assert client.get(f"/v1/repos/{repo}").json()["head"] == head
    ops = [{"op": "rename", "from": "top", "to": "t" * 74}]  # 4096: fits
    client.post(f"/v1/repos/{repo}/commits", json={"operations": ops}).raise_for_status()
    r = client.get(f"/v1/repos/{repo}/tree", params={"path": "t" * 74, "recursive": 1})
    assert f"{'t' * 74}/{deep}/f" in [e["path"] for e in r.json()["entries"]]
