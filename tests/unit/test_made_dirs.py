"""What a mount that never came up removes of the directories it made: everything but
its log, unless its journal holds a change (a mount that failed after the kernel had
mounted it may have taken writes it could not send)."""

from __future__ import annotations

from pathlib import Path

from repomount.mounting import MountRequest, remove_made_dirs
from repomount.vfs.journal import Journal


def _request(tmp_path: Path) -> MountRequest:
    req = MountRequest(
        src="http://127.0.0.1:1/r",
        mountpoint=tmp_path / "mnt",
        cache_dir=tmp_path / "cache" / "slug",
        state_dir=tmp_path / "state" / "slug",
    )
    req.log_file = req.state_dir / "mount.log"
    req.note_new_dirs()
    req.state_dir.mkdir(parents=True)
    req.cache_dir.mkdir(parents=True)
    req.log_file.write_text("not mounted: the token was refused\n")
    return req


def test_an_empty_journal_goes_with_all_but_the_log(tmp_path: Path) -> None:
    req = _request(tmp_path)
    Journal(req.state_dir).close()
    (req.state_dir / "reserve").write_bytes(b"\0" * 4096)
    remove_made_dirs(req)
    assert [p.name for p in req.state_dir.iterdir()] == ["mount.log"]
    assert not (tmp_path / "cache").exists()


def test_a_journal_holding_a_change_stays_whole(tmp_path: Path) -> None:
    req = _request(tmp_path)
    journal = Journal(req.state_dir)
    journal.add("mkdir", "made/while/mounted")
    journal.close()
    before = {p.name for p in req.state_dir.iterdir()}
    remove_made_dirs(req)
    assert before <= {p.name for p in req.state_dir.iterdir()}  # (reading adds a -shm)
    assert Journal(req.state_dir).records()[0].path == "made/while/mounted"
