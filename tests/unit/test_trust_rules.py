"""Which symlink targets may leave the mount, and which paths are git metadata
(vfs/trust.py; issue 18 #1, #2)."""

from __future__ import annotations

import pytest

from repomount.vfs.trust import in_git_dir, leaves_mount


@pytest.mark.parametrize(
    ("link", "target", "leaves"),
    [
        ("notes.txt", "/some/local/file", True),  # absolute: always
        ("a/b/l", "/a/b/inside-but-absolute", True),
        ("l", "x", False),
        ("l", "./x/./y", False),
        ("l", "..", True),  # from the root, one up is out
        ("l", "../x", True),
        ("a/l", "../x", False),
        ("a/b/l", "../../x", False),
        ("a/b/l", "../../../x", True),  # the issue's `../../` escape, one level deeper
        ("a/b/l", "./../.././x", False),
        ("a/b/l", "../../..", True),
        # A `..` after a name: `here -> .` takes `here/../x` one above the root.
        ("sneaky", "here/../x", True),
        ("a/l", "b/../c", True),
        ("a/l", "b/c", False),
        ("a/l", "b//c/", False),
    ],
)
def test_leaves_mount(link: str, target: str, leaves: bool) -> None:
    assert leaves_mount(link, target) is leaves


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        (".git", True),
        (".git/config", True),
        ("sub/.git", True),  # a gitdir file, or a nested repo
        ("a/b/.git/hooks/pre-commit", True),
        (".gitignore", False),
        ("x.git/config", False),
        ("git/config", False),
        ("a/.github/workflows/ci.yml", False),
    ],
)
def test_in_git_dir(path: str, inside: bool) -> None:
    assert in_git_dir(path) is inside
