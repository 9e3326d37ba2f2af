"""fuse/readahead: the kernel's read-ahead of a mount's backing device, set in sysfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from repomount.fuse.readahead import set_read_ahead, tune
from repomount.mounts import Mount
from repomount.options import BY_NAME


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


def _stat_of(device: tuple[int, int]) -> os.stat_result:
    st = list(os.stat("/"))
    st[2] = os.makedev(*device)  # st_dev
    return os.stat_result(st)


def _mount(device: str) -> Mount:
    return Mount(1, 0, device, "/mnt/x", "fuse.repomount", "repomount")


def test_tune_sets_the_window_of_the_device_the_mount_answers_from(tmp_path: Path) -> None:
    (tmp_path / "0:55").mkdir()
    assert tune(1 << 20, [], _mount("0:55"), _stat_of((0, 55)), bdi=tmp_path)
    assert (tmp_path / "0:55" / "read_ahead_kb").read_text() == "1024\n"


def test_tune_leaves_it_for_0_for_a_users_max_readahead_and_for_another_device(
    tmp_path: Path,
) -> None:
    (tmp_path / "0:55").mkdir()
    st = _stat_of((0, 55))
    assert not tune(0, [], _mount("0:55"), st, bdi=tmp_path)
    assert not tune(1 << 20, ["allow_other", "max_readahead=65536"], None, st, bdi=tmp_path)
    assert not tune(1 << 20, [], _mount("0:56"), st, bdi=tmp_path)  # something on top
    assert not (tmp_path / "0:55" / "read_ahead_kb").exists()


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0), ("0K", 0), ("0.0", 0), ("4K", 4096), ("1M", 1 << 20)]
)
def test_read_ahead_values(text: str, value: int) -> None:
    assert BY_NAME["read-ahead"].from_text(text) == value


@pytest.mark.parametrize("text", ["1K", "4095", "2G", "-1M", "lots"])
def test_read_ahead_values_refused(text: str) -> None:
    with pytest.raises(ValueError):
        BY_NAME["read-ahead"].from_text(text)
