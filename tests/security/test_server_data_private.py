"""The security probe of this stop found the reference server's data directory readable
by every local user: made 0755 with meta.sqlite3 (-wal, -shm) 0644, while every small
file of every repository is a row of that database. The directory and everything the
server makes in it are now its user's alone, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from support.server import ServerProc


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_directory_and_its_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # (the server inherits it)
    try:
        server = ServerProc(tmp_path / "data")
        server.start()
    finally:
        os.umask(old)
    try:
        server.create_repo("r")
        server.put("r", "small.txt", b"TOP SECRET\n")  # a row of meta.sqlite3
        server.put("r", "big.bin", os.urandom(200_000))  # a file under blobs/
        root = tmp_path / "data"
        made = [p for p in root.rglob("*")]
        assert {p.name for p in made} >= {"meta.sqlite3", "meta.sqlite3-wal", "lock", "blobs"}
        assert _mode(root) == 0o700
        for p in made:
            want = 0o700 if p.is_dir() else 0o600
            assert _mode(p) == want, f"{p.relative_to(root)} is {oct(_mode(p))}"
    finally:
        server.stop()
