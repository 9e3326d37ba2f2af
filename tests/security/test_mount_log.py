"""Issue 16 #7 (the mount log): it had no "mounted" line, and logged a mount that never
happened as "unmounted (exit 1)". Now it says "mounted SRC on MNT", and for a mount that
failed, why, and never "unmounted".
"""

from __future__ import annotations

import os
from pathlib import Path

from support.mount import force_unmount, repomount
from support.server import ServerProc


def _env(server: ServerProc) -> dict[str, str]:
    return {**os.environ, "REPOMOUNT_TOKEN": server.token}


def _mount_log(state_root: Path) -> str:
    (log,) = state_root.glob("*/mount.log")
    return log.read_text()


def test_the_mount_log_says_mounted(server: ServerProc, tmp_path: Path) -> None:
    server.create_repo("logged")
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    mnt.mkdir()
    src = f"{server.url}/logged"
    try:
        r = repomount(
            "mount", src, str(mnt), "--state-dir", str(state),
            "--cache-dir", str(tmp_path / "cache"), env=_env(server), timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert f"mounted {src} on {mnt}" in _mount_log(state)
        u = repomount("unmount", str(mnt), env=_env(server))
        assert u.returncode == 0, u.stderr
        assert f"unmounted {mnt}" in _mount_log(state)
    finally:
        force_unmount(mnt)


def test_a_failed_mount_logs_why_and_no_unmount(server: ServerProc, tmp_path: Path) -> None:
    mnt, state = tmp_path / "mnt", tmp_path / "state"
    mnt.mkdir()
    try:
        r = repomount(
            "mount", f"{server.url}/no-such-repo", str(mnt), "--state-dir", str(state),
            "--cache-dir", str(tmp_path / "cache"), env=_env(server), timeout=60,
        )  # fmt: skip
        assert r.returncode != 0
        why = r.stderr.strip().removeprefix("repomount: ")
        log = _mount_log(state)
        assert why in log, log
        assert "unmounted" not in log, log
        assert "mounted" not in log.replace("not mounted", ""), log
    finally:
        force_unmount(mnt)
