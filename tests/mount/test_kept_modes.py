"""A file's mode and mtime as a mount keeps them: native keeps both, so a new one set
in another mount shows here through the change feed, and a chmod here afterwards does
not undo it; the bits no remote keeps (setuid, setgid, sticky) are dropped at once, not
shown until a remount.
"""

from __future__ import annotations

import os
import stat

import pytest

from support.backends import Backend
from support.metadata import ATIME_NS, dir_with_a_file, mode_of, put_file
from support.mount import MountProc
from support.server import ServerProc
from support.util import wait_until


@pytest.mark.backends("native")
def test_a_mode_and_mtime_set_elsewhere_show_and_are_not_undone(
    server: ServerProc, mount_factory, backend: Backend
) -> None:
    """Native keeps a file's mode and mtime; a new one set in another mount (the same
    content, so the same version) shows in this mount through the change feed, and a
    chmod here afterwards sends the mtime that is shown, not the one it had before."""
    a: MountProc = mount_factory()
    (a.path / "f").write_bytes(b"hi\n")
    os.utime(a.path / "f", ns=(ATIME_NS, 1_111_111_111_000_000_000))
    a.sync()
    b: MountProc = mount_factory(a.repo, create=False)
    os.utime(b.path / "f", ns=(ATIME_NS, 2_222_222_222_000_000_000))
    os.chmod(b.path / "f", 0o751)
    b.sync()

    def shown_in_a() -> tuple[int, int]:
        st = os.stat(a.path / "f")
        return stat.S_IMODE(st.st_mode), st.st_mtime_ns

    wait_until(lambda: shown_in_a() == (0o751, 2_222_222_222_000_000_000), 20, "B's chmod in A")
    os.chmod(a.path / "f", 0o600)
    a.sync()
    with server.client() as c:
        entries = c.get(f"/v1/repos/{a.repo}/tree", params={"recursive": "1"}).json()["entries"]
    (f,) = [e for e in entries if e["path"] == "f"]
    assert (f["mode"], f["mtime_ns"]) == (0o600, 2_222_222_222_000_000_000)
    r = a.unmount()
    assert r.returncode == 0, f"unmount failed: {r.stdout}{r.stderr}\n{a.log()}"
    a.start()  # (its kept attributes must not bring back the old time)
    assert shown_in_a() == (0o600, 2_222_222_222_000_000_000)


@pytest.mark.backends("native", "relace")
def test_setuid_setgid_and_sticky_bits_are_dropped_at_once(
    server: ServerProc, mount_factory, backend: Backend
) -> None:
    """A walkthrough: `chmod 4755 f` showed 4755 until a remount, then 755 (no remote
    keeps those bits, and the local store followed the remote). What shows now is what
    is kept: the permission bits, from the chmod (or mkdir) on."""
    m: MountProc = mount_factory()
    put_file(m.path, "f")
    dir_with_a_file(m.path, "d")
    m.sync()
    os.chmod(m.path / "f", 0o4755)
    os.chmod(m.path / "d", 0o3775)
    os.mkdir(m.path / "new", 0o1777)  # (less the umask)
    put_file(m.path, "new/keep.txt")  # (an empty directory is local on relace)
    umask = os.umask(0)
    os.umask(umask)
    expected = {"f": "0o755", "d": "0o775", "new": oct(0o777 & ~umask)}

    def shown() -> dict[str, object]:
        return {name: mode_of(name)(m.path) for name in expected}

    assert shown() == expected
    m.sync()
    r = m.unmount()
    assert r.returncode == 0, f"unmount failed: {r.stdout}{r.stderr}\n{m.log()}"
    m.start()
    assert shown() == expected
