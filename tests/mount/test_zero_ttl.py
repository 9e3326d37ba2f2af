"""`--metadata-ttl 0` (no listing trusted, no attribute cached by the kernel): the mount
starts and answers. It hung for ever as it started, its mountpoint in place (every
access to it waiting, `repomount mount` never returning): once ready, the daemon
resolved its own mountpoint (to note its state directory beside its control socket)
from the loop that must answer the resulting stat; with a non-zero TTL the kernel
answered that stat from the attributes the readiness check had just fetched."""

from __future__ import annotations

import os

import pytest

from support.mount import MountProc

pytestmark = pytest.mark.backends("native")


def test_a_mount_with_a_zero_metadata_ttl_starts_and_answers(mount_factory) -> None:
    m: MountProc = mount_factory(extra_args=["--metadata-ttl", "0"])
    (m.path / "d").mkdir()
    (m.path / "d" / "f").write_text("x\n")
    assert (m.path / "d" / "f").read_text() == "x\n"
    assert os.listdir(m.path) == ["d"]
    m.sync()
