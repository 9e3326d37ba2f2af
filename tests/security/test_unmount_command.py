"""Issue 16 #2 and #6: `repomount unmount` unmounted anything, and left daemons behind.

As root, `repomount unmount ~/tmpfs` unmounted a tmpfs (its files gone), printed
"unmounted" and exited 0: it only checked that the path was a mount point. Now it
refuses whatever is not a `fuse.repomount` mount, with exit 2.

And when another mount namespace still held the mount, a successful unmount left the
daemon running for ever (the kernel never said the mount was gone, so it kept
`/dev/fuse` open and retried the server). Now the daemon notices that the mount left its
own namespace and exits, and the command says where the mount is still held.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from support.mount import MountProc, is_mounted, repomount
from support.server import ServerProc
from support.util import wait_until


def test_unmount_refuses_a_tmpfs(tmp_path: Path) -> None:
    target = tmp_path / "scratch"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(target)], check=True)
    try:
        (target / "precious.txt").write_text("only copy")
        r = repomount("unmount", str(target))
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.startswith("repomount: ") and len(r.stderr.splitlines()) == 1
        assert "tmpfs" in r.stderr and "not a repomount mount" in r.stderr, r.stderr
        assert is_mounted(target)
        assert (target / "precious.txt").read_text() == "only copy"
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_unmount_refuses_a_directory_that_is_not_mounted(tmp_path: Path) -> None:
    r = repomount("unmount", str(tmp_path))
    assert r.returncode == 2 and "is not mounted" in r.stderr, r.stderr


def _mount_namespace(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


def test_unmount_while_another_namespace_holds_the_mount(
    server: ServerProc, mnt: MountProc
) -> None:
    assert mnt.proc is not None
    (mnt.path / "a.txt").write_bytes(b"A")
    holder = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sleep", "600"],
        stdin=subprocess.DEVNULL,
    )
    try:
        # unshare execs sleep once its namespace (a copy of ours, this mount too) is set
        wait_until(
            lambda: Path(f"/proc/{holder.pid}/cmdline").read_bytes().startswith(b"sleep"),
            10,
            "the namespace holding the mount",
        )
        assert _mount_namespace(holder.pid) != _mount_namespace("self")
        r = repomount("unmount", str(mnt.path), env=mnt.env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert not is_mounted(mnt.path)
        assert "another mount namespace" in r.stdout + r.stderr, r.stdout + r.stderr
        assert str(holder.pid) in r.stdout + r.stderr
        assert mnt.proc.wait(15) == 0, mnt.log()
        assert server.tree(mnt.repo) == {"a.txt": b"A"}
    finally:
        holder.kill()
        holder.wait()
