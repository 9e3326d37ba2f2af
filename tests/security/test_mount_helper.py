"""Issue 15, fstab and `mount -t`: there was no mount helper, so neither
`mount -t fuse.repomount SRC MNT -o ...` nor an /etc/fstab line could mount a remote.

Now `mount.fuse.repomount` (a console script, linked into /sbin) turns mount(8)'s
`SRC MNT -o OPTS` into `repomount mount`: every mount option as `name=value` (`-` or
`_`), FUSE options passed on, fstab's and systemd's own (`_netdev`, `noauto`,
`x-systemd.automount`, ...) ignored, anything else refused in one line; and
`umount.fuse.repomount` makes `umount MNT` send what is pending first, as
`repomount unmount` does.

mount(8) looks for helpers in /sbin only, so the real-mount tests run in a mount
namespace of their own where /usr/sbin has this tree's helpers laid over it (an
overlay: the system's /sbin is untouched); the test reaches the mount there through
/proc/PID/root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from repomount.mounthelper import HelperError, mount_main, translate
from support.server import ServerProc
from support.util import wait_until

SRC_DIR = Path(__file__).resolve().parents[2] / "src"


# --------------------------------------------------------------------------- translation


def test_options_map_onto_repomount_flags() -> None:
    argv = translate(
        "http://h/r",
        "/m",
        ["rw,_netdev,noauto,x-systemd.automount,nofail,comment=x",
         "flush_delay=0.2,max-flush-window=3,state_dir=/s,cache_dir=/c,uid=1000,gid=100",
         "allow_other,default_permissions,no_change_feed,trust_remote_code=no,config=/e/c.toml"],
    )  # fmt: skip
    assert argv == [
        "mount", "http://h/r", "/m", "--flush-delay=0.2", "--max-flush-window=3",
        "--state-dir=/s", "--cache-dir=/c", "--uid=1000", "--gid=100", "--no-change-feed",
        "--config=/e/c.toml", "-o", "rw,allow_other,default_permissions",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("flush_dely=1", "unknown option 'flush_dely=1'"),
        ("flush_delay", "option flush_delay needs a value"),
        ("no_change_feed=maybe", "no_change_feed: 'maybe' is not a yes or a no"),
        ("config=", "config= needs the config file's path"),
        # (these printed `repomount mount`'s whole usage, naming --flush-delay)
        ("flush_delay=soon", "flush_delay: not a number of seconds: 'soon'"),
        ("cache-size=inf", "cache-size: not a size: 'inf'"),
        ("uid=nobody-here", "uid: no user 'nobody-here'"),
    ],
)
def test_a_bad_option_is_refused_in_one_line(option: str, says: str) -> None:
    with pytest.raises(HelperError, match=says):
        translate("http://h/r", "/m", [option])


def test_sloppy_ignores_unknown_options() -> None:
    assert translate("http://h/r", "/m", ["whatever,flush_delay=1"], sloppy=True) == [
        "mount", "http://h/r", "/m", "--flush-delay=1",
    ]  # fmt: skip


def test_fake_mode_says_what_it_would_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert mount_main(["work:", "/mnt/w", "-f", "-o", "rw,_netdev,flush_delay=2"]) == 0
    assert capsys.readouterr().err.strip() == ("repomount mount work: /mnt/w --flush-delay=2 -o rw")


def test_usage_errors_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert mount_main(["only-src"]) == 1
    assert mount_main(["a", "/m", "-N", "/proc/1/ns/mnt"]) == 1
    err = capsys.readouterr().err
    assert "usage: mount.fuse.repomount SRC MNT" in err and "-N" in err


# --------------------------------------------------------------------------- mount(8)


class Namespace:
    """A private mount namespace whose /usr/sbin has the helpers; `run` runs a command
    there, `at` is a path as that namespace sees it."""

    def __init__(self, tmp: Path) -> None:
        helpers = tmp / "sbin"
        helpers.mkdir()
        for name, main in (("mount", "mount_main"), ("umount", "umount_main")):
            script = helpers / f"{name}.fuse.repomount"
            code = f"import sys; from repomount.mounthelper import {main}; sys.exit({main}())"
            script.write_text(
                f"#!/bin/sh\nPYTHONPATH={SRC_DIR} exec {sys.executable} -c '{code}' \"$@\"\n"
            )
            script.chmod(0o755)
        overlay = f"mount -t overlay overlay -o lowerdir={helpers}:/usr/sbin /usr/sbin"
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"{overlay} && echo ready && exec sleep 3600"],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert self.holder.stdout is not None
        assert self.holder.stdout.readline().strip() == "ready"

    def run(self, *cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(self.holder.pid), "-m", *cmd],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    def at(self, path: Path) -> Path:
        return Path(f"/proc/{self.holder.pid}/root{path}")

    def mounted(self, path: Path) -> bool:
        table = Path(f"/proc/{self.holder.pid}/mountinfo").read_text()
        return any(line.split()[4] == str(path) for line in table.splitlines())

    def close(self, mountpoints: list[Path]) -> None:
        for m in mountpoints:
            if self.mounted(m):
                self.run("fusermount3", "-uz", str(m), env={**os.environ})
        self.holder.send_signal(signal.SIGKILL)
        self.holder.wait(10)


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[Namespace]:
    namespace = Namespace(tmp_path)
    made: list[Path] = [tmp_path / "mnt"]
    yield namespace
    namespace.close(made)


def _daemons(mnt: Path) -> list[int]:
    """The mount daemons of `mnt`: forks of the helper, whose command line they keep."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"mount_main" in arg for arg in cmdline) and str(mnt).encode() in cmdline:
            found.append(int(pid))
    return found


def _env(server: ServerProc) -> dict[str, str]:
    return {**os.environ, "REPOMOUNT_TOKEN": server.token, "PYTHONPATH": str(SRC_DIR)}


def test_mount_t_fuse_repomount_with_options(
    server: ServerProc, tmp_path: Path, ns: Namespace
) -> None:
    server.create_repo("typed")
    server.put("typed", "remote.txt", b"from the server")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    opts = (
        f"flush_delay=0.2,state_dir={tmp_path / 'state'},cache-dir={tmp_path / 'cache'},"
        "uid=12345,gid=23456,_netdev"
    )
    r = ns.run("mount", "-t", "fuse.repomount", f"{server.url}/typed", str(mnt), "-o", opts,
               env=_env(server))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert ns.mounted(mnt) and not os.path.ismount(mnt)  # there, not here
    for path in (ns.at(mnt), ns.at(mnt) / "remote.txt"):  # uid=, gid=: who owns them
        assert (path.stat().st_uid, path.stat().st_gid) == (12345, 23456)
    (ns.at(mnt) / "hello.txt").write_bytes(b"hello from mount -t")
    wait_until(lambda: "hello.txt" in server.tree("typed"), 30, "the write to reach the server")
    assert server.tree("typed")["hello.txt"] == b"hello from mount -t"
    assert list((tmp_path / "state").glob("*/mount.log"))
    u = ns.run("umount", str(mnt), env=_env(server))
    assert u.returncode == 0, u.stderr
    assert not ns.mounted(mnt)


def test_an_fstab_line_mounts_and_umount_sends_what_is_pending(
    server: ServerProc, tmp_path: Path, ns: Namespace
) -> None:
    server.create_repo("tabbed")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    hold = "flush_delay=60,max_flush_window=120"  # nothing goes out before umount
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# a scratch fstab\n"
        f"{server.url}/tabbed {mnt} fuse.repomount "
        f"noauto,_netdev,x-systemd.automount,{hold},local_only=*.tmp,"
        f"state_dir={tmp_path / 'state'},cache_dir={tmp_path / 'cache'} 0 0\n"
    )
    r = ns.run("mount", "-T", str(fstab), str(mnt), env=_env(server))
    assert r.returncode == 0, r.stderr
    assert ns.mounted(mnt)
    for i in range(20):
        (ns.at(mnt) / f"f{i}.txt").write_bytes(b"%d" % i)
    (ns.at(mnt) / "scratch.tmp").write_bytes(b"stays here")
    assert server.tree("tabbed") == {}  # all pending
    assert len(_daemons(mnt)) == 1
    u = ns.run("umount", str(mnt), env=_env(server))
    assert u.returncode == 0, u.stderr
    assert not ns.mounted(mnt)
    # umount returned once everything was sent and the daemon left: nothing to wait for
    assert _daemons(mnt) == []
    assert server.tree("tabbed") == {f"f{i}.txt": b"%d" % i for i in range(20)}
