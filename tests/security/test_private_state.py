"""Issue 18 finding 3: a mount's unsent content and its journal were readable by other
local users.

In the default (daemonized) mode the state directory was created 0755 (the daemon's
log was opened in it before the mount asked for 0700), and journal.db and pending
blobs were 0644: another uid read the content of files not uploaded yet and the
journal's list of paths. Now the state and cache directories are 0700 and their
files 0600 in every mode, and a directory another user owns or can write is refused.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from repomount.config import mount_slug
from repomount.remotes.registry import open_remote
from support.mount import force_unmount, is_mounted, repomount
from support.otheruser import OTHER_GID, OTHER_UID, can_read
from support.server import ServerProc
from support.util import wait_until

HELD_BACK = ("--flush-delay", "3600", "--max-flush-window", "3600")


def _env(server: ServerProc, base: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REPOMOUNT_TOKEN": server.token,
        "XDG_STATE_HOME": str(base / "xs"),
        "XDG_CACHE_HOME": str(base / "xc"),
    }


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_daemon_mount_keeps_unsent_content_from_other_users(
    server: ServerProc, tmp_path: Path, open_dir: Path
) -> None:
    server.create_repo("p")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = _env(server, open_dir)
    src = f"{server.url}/p"
    try:
        r = repomount("mount", src, str(mnt), *HELD_BACK, env=env, timeout=60)  # no -f
        assert r.returncode == 0, r.stderr
        (mnt / "secret.txt").write_bytes(b"the unsent secret")
        state = open_dir / "xs" / "repomount" / mount_slug(open_remote(src).identity)
        cache = open_dir / "xc" / "repomount" / mount_slug(open_remote(src).identity)
        blobs = wait_until(
            lambda: sorted((state / "blobs").iterdir()), what="the write's pending blob"
        )
        status = repomount("status", str(mnt), "--json", env=env)
        assert json.loads(status.stdout)["pending"], "the write went out: nothing to protect"

        dirs = [open_dir / "xs", state.parent, state, state / "blobs", cache.parent, cache]
        files = [state / "journal.db", state / "mount.log", state / "lock", *blobs]
        for path in dirs + files:
            assert _mode(path) & 0o077 == 0, f"{path} is {oct(_mode(path))}"
            assert not can_read(str(path)), f"another user can read {path}"
    finally:
        repomount("unmount", str(mnt), "--drain-timeout", "10", env=env)
        force_unmount(mnt)


@pytest.mark.parametrize("case", ["other_owner", "other_writable", "loose_but_ours"])
def test_state_dir_of_another_user_is_refused(
    server: ServerProc, tmp_path: Path, open_dir: Path, case: str
) -> None:
    """A state directory another user owns or can write may hold anything they put
    there (a journal replaying their changes as ours): refused. One of ours that others
    can merely read (made by an older version) is tightened."""
    server.create_repo("q")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = _env(server, open_dir)
    src = f"{server.url}/q"
    state = open_dir / "xs" / "repomount" / mount_slug(open_remote(src).identity)
    state.mkdir(parents=True, mode=0o700)
    old_file = state / "journal.db"
    if case == "other_owner":
        os.chown(state, OTHER_UID, OTHER_GID)
    elif case == "other_writable":
        os.chmod(state, 0o777)
    else:
        os.chmod(state, 0o755)
        old_file.touch(mode=0o644)
        os.chmod(old_file, 0o644)
    try:
        r = repomount("mount", src, str(mnt), env=env, timeout=60)
        if case == "loose_but_ours":
            assert r.returncode == 0, r.stderr
            assert _mode(state) == 0o700
            assert _mode(old_file) & 0o077 == 0
            return
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("repomount: "), r.stderr
        assert str(state) in lines[0]
        assert not is_mounted(mnt)
        assert not old_file.exists(), "the mount wrote into the refused directory"
    finally:
        repomount("unmount", str(mnt), "--drain-timeout", "10", env=env)
        force_unmount(mnt)
