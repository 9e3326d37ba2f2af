"""fuse/readahead: the kernel's read-ahead of a mount's backing device, set in sysfs."""

from __future__ import annotations

from pathlib import Path

from repomount.fuse.readahead import set_read_ahead


def test_the_window_is_written_in_kib(tmp_path: Path) -> None:
    (tmp_path / "0:55").mkdir()
    assert set_read_ahead("0:55", 1 << 20, bdi=tmp_path)
    assert (tmp_path / "0:55" / "read_ahead_kb").read_text() == "1024\n"
    assert set_read_ahead("0:55", 1500, bdi=tmp_path)  # rounded up to whole KiB
    assert (tmp_path / "0:55" / "read_ahead_kb").read_text() == "2\n"


def test_only_a_device_number_names_a_file(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    for bad in ("../x", "x", "0:55/../../x", "", "0:"):
        assert not set_read_ahead(bad, 1 << 20, bdi=tmp_path / "bdi")
    assert list(tmp_path.rglob("read_ahead_kb")) == []


def test_no_such_device_or_no_right_leaves_the_default(tmp_path: Path) -> None:
    assert not set_read_ahead("0:99", 1 << 20, bdi=tmp_path)  # (no such directory)
