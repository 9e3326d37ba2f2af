"""The server's disk full: an upload is 507 (never a 500 and a traceback), what it
spooled is removed (before, its temp file, whose close failed, stayed and kept the disk
full after the upload that filled it), and uploads that fit go on."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.test_cli import serve
from support.server import ServerProc
from support.smalldisk import small_disk


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[ServerProc]:
    """A server whose data directory is an 8 MiB filesystem of its own."""
    with small_disk(tmp_path / "small", "8m") as disk:
        proc = ServerProc(disk / "data")
        try:
            proc.start()
            yield proc
        finally:
            proc.stop()


def _put(server: ServerProc, repo: str, data: bytes) -> tuple[int, str]:
    sha = hashlib.sha256(data).hexdigest()
    with server.client() as c:
        r = c.put(f"/v1/repos/{repo}/blobs/{sha}", content=data)
    return r.status_code, r.text


def test_an_upload_that_fills_the_disk_is_507_and_leaves_nothing(
    small_server: ServerProc,
) -> None:
    small_server.create_repo("r")
    for _ in range(2):  # (the second found the disk as full as the first left it)
        status, text = _put(small_server, "r", os.urandom(10 << 20))
        assert status == 507, text
        assert "the server's disk is full" in text
        assert list((small_server.data_dir / "tmp").iterdir()) == []
    status, text = _put(small_server, "r", os.urandom(1 << 20))
    assert status in (200, 201), text
    log = small_server.log_path.read_text()
    assert "Traceback" not in log and "disk is full" in log


def test_a_server_that_cannot_make_its_store_on_a_full_disk_says_so(tmp_path: Path) -> None:
    """Was a traceback (sqlite3.OperationalError: disk I/O error) from opening the store."""
    with small_disk(tmp_path / "small", "300k") as disk:
        (disk / "fill").write_bytes(b"\0" * (290 << 10))
        done = serve("--data", str(disk / "data"), "--port", "0", token="t")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"repomount serve: error: cannot open the store in {disk / 'data'}: ")


def test_data_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """Was "[Errno 17] File exists: 'PATH'"."""
    (tmp_path / "file").write_text("x")
    done = serve("--data", str(tmp_path / "file"), "--port", "0", token="t")
    assert (done.returncode, done.stderr) == (
        2,
        f"repomount serve: error: --data {tmp_path / 'file'} is not a directory\n",
    )
