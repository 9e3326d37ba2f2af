"""Directories only this user can reach: a mount's state, cache and control socket.

Other local users must not read what a mount has not uploaded yet (the journal and its
pending content), read its cache, or stand in for its control socket. So the mount
process runs with a umask of 077 (every file it makes is 0600, every directory 0700),
directories are created with explicit modes, and a directory found in place is checked
before use: one another user owns or can write is refused (they may have put anything
in it); one of ours that others can only read (made by an older version) is tightened.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077


class NotPrivateError(Exception):
    """A directory other users own or can change. The message is one line saying which
    and why; the caller refuses to use it."""


def make_private_dir(path: Path, what: str, hint: str) -> None:
    """Create `path` 0700 (missing parents too), or check the directory found there.
    A symbolic link the user made (a cache on another disk) is followed; one another
    user made is not. `what` names it in messages ("the state directory"), `hint` says
    what to do instead."""
    _create_missing(path)
    uid = os.getuid()
    link = os.lstat(path)
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (uid, 0):
        raise NotPrivateError(
            f"refusing {what} {path}: it is a symbolic link made by uid {link.st_uid}; {hint}"
        )
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotPrivateError(f"refusing {what} {path}: it is not a directory; {hint}")
    _refuse_foreign(st, f"{what} {path}", hint)
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)


def make_strict_dir(path: Path, what: str, hint: str) -> None:
    """Create `path` 0700 in an existing parent, or check the directory found there:
    ours, not a symbolic link, and no access at all for anyone else (nothing is
    tightened: a directory others could enter may hold something they put there)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    check_strict_dir(path, what, hint)


def check_strict_dir(path: Path, what: str, hint: str) -> None:
    """The checks of make_strict_dir, creating nothing. FileNotFoundError if absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            kind = "a symbolic link" if os.path.islink(path) else "not a directory"
            raise NotPrivateError(f"refusing {what} {path}: it is {kind}; {hint}") from None
        raise
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    _refuse_foreign(st, f"{what} {path}", hint)
    if st.st_mode & 0o077:
        raise NotPrivateError(
            f"refusing {what} {path}: other users have access to it "
            f"(mode {stat.S_IMODE(st.st_mode):o}, expected 700); {hint}"
        )
    parent = os.stat(path.parent)
    if parent.st_mode & 0o002 and not parent.st_mode & stat.S_ISVTX:
        raise NotPrivateError(
            f"refusing {what} {path}: anyone can rename it away "
            f"({path.parent} is world-writable without the sticky bit); {hint}"
        )


def tighten_tree(root: Path) -> None:
    """Take group and other access away from everything of ours under `root` (files
    an older version left 0644). Symbolic links are not followed."""
    uid = os.getuid()
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(here, name)
            st = os.lstat(path)
            if st.st_uid == uid and not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)


def _refuse_foreign(st: os.stat_result, named: str, hint: str) -> None:
    uid = os.getuid()
    if st.st_uid != uid:
        raise NotPrivateError(
            f"refusing {named}: it belongs to uid {st.st_uid}, not to us (uid {uid}); {hint}"
        )
    if st.st_mode & 0o022:
        raise NotPrivateError(
            f"refusing {named}: other users can write in it "
            f"(mode {stat.S_IMODE(st.st_mode):o}); {hint}"
        )


def _create_missing(path: Path) -> None:
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass


def shared_file_problem(mode: int) -> str | None:
    """Why a file holding secrets (a config file, a token file) with these permission
    bits is not private, with the mode; None when only its owner can use it."""
    mode = stat.S_IMODE(mode)
    if mode & 0o044:
        who = "group members and other users" if mode & 0o004 else "group members"
        return f"{who} can read it (mode {mode:04o})"
    if mode & 0o022:
        return f"others can change it (mode {mode:04o})"
    return None
