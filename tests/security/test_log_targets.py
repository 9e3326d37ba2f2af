"""Issue 15, logs: a mount in the background appended to STATE_DIR/.../mount.log for
ever, and under systemd its lines reached the journal without their priority.

Now a daemon's mount.log is rotated (LOG_MAX_BYTES, LOG_BACKUPS kept), its stdout and
stderr following the current file; under systemd (JOURNAL_STREAM naming our output, or
INVOCATION_ID without a terminal) each line goes to stdout with a `<N>` syslog
priority, which journald reads as the line's priority.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

LINES = """
import logging, os, sys
from pathlib import Path
from repomount import log
kind = sys.argv[1]
if kind == "file":
    log.setup("INFO", file=Path(sys.argv[2]), max_bytes=2000, backups=2)
else:
    log.setup("INFO")
for i in range(200 if kind == "file" else 1):
    logging.getLogger("repomount.t").info("line %d %s", i, "x" * 40)
logging.getLogger("repomount.t").warning("a warning")
logging.getLogger("repomount.t").error("an error")
logging.getLogger("repomount.t").debug("not shown at INFO")
os.write(2, b"written to fd 2 by C code\\n")
"""


def _run(args: list[str], env: dict[str, str], stdout: Path) -> None:
    with stdout.open("wb") as out:
        subprocess.run(
            [sys.executable, "-c", LINES, *args],
            env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, check=True, timeout=60,
        )  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "INVOCATION_ID")}
    return {**env, **extra}


def test_a_daemons_log_is_rotated_and_stray_output_follows(tmp_path: Path) -> None:
    path = tmp_path / "mount.log"
    _run(["file", str(path)], _env(), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.glob("mount.log*")) == [
        "mount.log", "mount.log.1", "mount.log.2",
    ]  # fmt: skip
    assert all(p.stat().st_size <= 2000 for p in tmp_path.glob("mount.log.*"))
    current = path.read_text()
    assert "an error" in current and "written to fd 2 by C code" in current
    assert "line 0 " not in current  # rotated away
    assert (tmp_path / "out").read_bytes() == b""


def test_under_systemd_lines_carry_their_priority(tmp_path: Path) -> None:
    out = tmp_path / "journal"
    out.touch()
    st = out.stat()
    _run(["journal"], _env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"), out)
    lines = out.read_text().splitlines()
    assert "<6>repomount.t: line 0 " + "x" * 40 in lines
    assert "<4>repomount.t: a warning" in lines and "<3>repomount.t: an error" in lines
    assert not any("not shown" in ln for ln in lines)

    _run(["journal"], _env(INVOCATION_ID="0123456789abcdef"), out)  # no JOURNAL_STREAM
    assert "<4>repomount.t: a warning" in out.read_text().splitlines()


def test_elsewhere_lines_are_plain_with_the_time(tmp_path: Path) -> None:
    """JOURNAL_STREAM inherited by a process whose output goes elsewhere (a shell
    started from a service): not the journal."""
    out = tmp_path / "terminal"
    _run(["journal"], _env(JOURNAL_STREAM="1:1"), out)
    text = out.read_text()
    assert "<4>" not in text and " WARNING repomount.t: a warning" in text
