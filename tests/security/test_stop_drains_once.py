"""Issue 15 (the SIGTERM path) and issue 16 #1: a stop drained pending changes twice.

SIGTERM or SIGINT waited `--drain-timeout` for the unreachable remote while mounted,
then again after unmounting: 2 x 60 s, past systemd's default 90 s stop timeout. Every
stop now drains once, within `--drain-timeout` from the moment it starts; what is left
stays in the journal, the log says so, and the next mount sends it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from support.mount import MountProc
from support.server import ServerProc
from support.util import wait_until

DRAIN = 5.0  # the mount's --drain-timeout
MARGIN = 3.0  # unmounting, closing the journal, leaving the process


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "fusermount3 -u"])
def test_a_stop_with_the_server_away_drains_once(
    server: ServerProc, mount_factory, how: str
) -> None:
    m: MountProc = mount_factory(extra_args=["--drain-timeout", str(DRAIN)])
    assert m.proc is not None
    os.listdir(m.path)
    server.stop()
    (m.path / "late.txt").write_bytes(b"written while the server was away")
    started = time.monotonic()
    if how == "fusermount3 -u":
        subprocess.run(["fusermount3", "-u", str(m.path)], check=True)
    else:
        m.proc.send_signal(getattr(signal, how))
    code = m.proc.wait(4 * DRAIN)
    took = time.monotonic() - started
    log = m.log()
    assert code == 1, log
    assert took < DRAIN + MARGIN, f"stopping took {took:.1f} s with --drain-timeout {DRAIN}"
    assert "stay in the journal" in log and "late.txt" in log, log

    server.start()
    again = MountProc(m.src, m.path, work_dir=m.work_dir, token=server.token, repo=m.repo)
    again.start(timeout=60)
    try:
        assert server.tree(m.repo) == {"late.txt": b"written while the server was away"}
    finally:
        again.stop()


def test_a_second_signal_stops_at_once(server: ServerProc, mount_factory) -> None:
    """The first signal starts the one drain; another cuts it short: what is left stays
    in the journal (a user pressing Ctrl-C twice, a service manager in a hurry)."""
    m: MountProc = mount_factory(extra_args=["--drain-timeout", "600"])
    assert m.proc is not None
    os.listdir(m.path)
    server.stop()
    (m.path / "late.txt").write_bytes(b"late")
    offset = len(m.log())
    m.proc.send_signal(signal.SIGINT)
    wait_until(lambda: "stopping" in m.log()[offset:], 30, "the log to say the stop began")
    m.proc.send_signal(signal.SIGINT)
    assert m.proc.wait(30) == 1
    assert "stay in the journal" in m.log()[offset:]
