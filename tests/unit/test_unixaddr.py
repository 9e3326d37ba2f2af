"""Socket addresses of any length (unixaddr.address): short paths as they are, long ones
through their directory, and a clear error where that cannot work (no /proc)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from repomount import unixaddr


def test_a_long_path_binds_and_connects_through_its_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "control.sock"
    assert len(os.fsencode(path)) >= unixaddr.SUN_PATH
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with server, client:
        with unixaddr.address(path) as addr:
            assert addr.startswith("/proc/self/fd/")
            server.bind(addr)
        server.listen(1)
        assert path.exists()  # the very directory entry the long path names
        with unixaddr.address(path) as addr:
            client.connect(addr)


def test_a_short_path_and_an_abstract_address_are_given_back(tmp_path: Path) -> None:
    with unixaddr.address(tmp_path / "s.sock") as addr:
        assert addr == str(tmp_path / "s.sock")
    with unixaddr.address("\0abstract") as addr:
        assert addr == "\0abstract"


def test_without_proc_a_long_path_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_path = tmp_path / ("d" * 120) / "control.sock"
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: p != "/proc/self/fd" and real_isdir(p))
    with pytest.raises(OSError) as raised, unixaddr.address(long_path):
        pass
    assert raised.value.errno == errno.ENAMETOOLONG
    assert "/proc is not mounted" in str(raised.value)
