"""Security probe: a remote's names and error messages reached terminals and the mount
log raw. An error message holding `\\n2026-12-07 08:00:00 INFO repomount.mounting: FAKE
unmounted cleanly\\x1b[31m` forged a line of mount.log and coloured the terminal of
`repomount status` and `unmount`. Now every place that prints such text escapes its
control characters as repr() does (printable.py); `status --json` keeps exact strings.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from repomount import cli, cli_control, daemon, log, sdnotify
from repomount.printable import printable
from repomount.remotes.http_errors import ErrorBody, map_error, parse_error_body

FAKE = "2026-12-07 08:00:00 INFO repomount.mounting: FAKE unmounted cleanly"
FORGED = f"boom\n{FAKE}\x1b[31m"
SHOWN = f"boom\\n{FAKE}\\x1b[31m"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain name.txt", "plain name.txt"),
        ("é, 日本, 😀 and a \\ stay", "é, 日本, 😀 and a \\ stay"),
        ("new\nline\r\ttab", "new\\nline\\r\\ttab"),
        ("esc\x1b[31mred\x07", "esc\\x1b[31mred\\x07"),
        ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),  # (U+009B: an 8-bit CSI)
        ("bidi\u202eevil \u2028sep", "bidi\\u202eevil \\u2028sep"),
        ("lone\ud800", "lone\\ud800"),  # (no UTF-8 form: a log file could not take it)
    ],
)
def test_control_characters_are_escaped_as_repr_does_and_nothing_else(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert printable(shown) == shown  # escaping twice does no harm
    assert shown.isprintable()


def test_a_log_line_is_one_line_whatever_its_message_holds() -> None:
    out = io.StringIO()
    log.setup("INFO", out)
    try:
        logging.getLogger("repomount.t").error("commit failed: %s", FORGED)
    finally:
        logging.getLogger().handlers.clear()
    (line,) = out.getvalue().splitlines()
    assert line.endswith(f"ERROR repomount.t: commit failed: {SHOWN}")


def test_a_traceback_keeps_its_lines() -> None:
    out = io.StringIO()
    log.setup("INFO", out)
    try:
        try:
            raise ValueError("why")
        except ValueError:
            logging.getLogger("repomount.t").exception("it failed")
    finally:
        logging.getLogger().handlers.clear()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("it failed") and lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: why"


def test_a_remotes_error_message_is_escaped_where_it_becomes_an_error() -> None:
    body = json.dumps({"error": {"code": "boom", "message": FORGED}}).encode()
    parsed = parse_error_body(httpx.Response(500, content=body))
    error = map_error(500, parsed, context="POST /v1/repos/r/commits")
    assert error.message == f"POST /v1/repos/r/commits: 500 {SHOWN}"
    assert error.code == "boom"  # (compared, never printed: kept as sent)
    bare = map_error(422, ErrorBody(code="odd\x1b]0;title\x07"), context="GET /x")
    assert bare.message == "GET /x: 422 odd\\x1b]0;title\\x07"


STATUS: dict[str, Any] = {
    "ok": True,
    "remote": "http://127.0.0.1:1/r",
    "online": False,
    "pending_changes": 1,
    "pending": [{"op": "rename", "path": "esc\x1b[31mred", "to": "new\nname", "age": 4.0}],
    "local_only": ["#a\x1b]0;pwned\x07#"],
    "conflicts": [{"path": "c\x1b[2J", "resolution": "kept", "policy": "both"}],
    "set_aside": [{"op": "write", "path": "s\rx", "reason": "why\x1b[K"}],
    "last_error": f"Unavailable: {FORGED}",
    "state_dir": "/tmp/s",
}


def _asked(monkeypatch: pytest.MonkeyPatch, replies: dict[str, dict[str, Any]]) -> None:
    def control(mountpoint: Path, cmd: str, **kw: Any) -> dict[str, Any]:
        return json.loads(json.dumps(replies[cmd]))  # (a fresh copy, as over the socket)

    monkeypatch.setattr(cli_control, "control", control)


def test_status_escapes_names_and_errors_and_json_keeps_them_exact(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _asked(monkeypatch, {"status": STATUS})
    args = argparse.Namespace(mountpoint=Path("/m"), json=False)
    assert cli_control.cmd_status(args) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out
    assert "esc\\x1b[31mred -> new\\nname" in out
    assert f"last error: Unavailable: {SHOWN}" in out
    assert "#a\\x1b]0;pwned\\x07#" in out and "write s\\rx: why\\x1b[K" in out
    assert not [line for line in out.splitlines() if line.startswith(FAKE)]

    assert cli_control.cmd_status(argparse.Namespace(mountpoint=Path("/m"), json=True)) == 0
    exact = json.loads(capsys.readouterr().out)
    assert exact["pending"][0]["path"] == "esc\x1b[31mred"
    assert exact["local_only"] == STATUS["local_only"]


def test_sync_escapes_what_it_says(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sync = {
        "ok": False,
        "pending": ["esc\x1b[31mred"],
        "last_error": FORGED,
        "conflicts": STATUS["conflicts"],
        "set_aside": STATUS["set_aside"],
    }
    _asked(monkeypatch, {"sync": sync, "status": STATUS})
    assert cli_control.cmd_sync(argparse.Namespace(mountpoint=Path("/m"), timeout=1)) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and SHOWN in err
    assert not [line for line in err.splitlines() if line.startswith(FAKE)]


def test_unmount_escapes_its_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    message = f"unmounted /m, but 1 change(s) could not be uploaded ({FORGED}): esc\x1b[31m"
    monkeypatch.setattr(daemon, "unmount", lambda mountpoint, timeout: (1, message))
    assert cli.main(["unmount", "/m"]) == 1
    err = capsys.readouterr().err
    said = "repomount: unmounted /m, but 1 change(s) could not be uploaded"
    assert err == f"{said} ({SHOWN}): esc\\x1b[31m\n"


def test_systemds_status_line_stays_one_assignment(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, ...]] = []
    monkeypatch.setattr(sdnotify, "notify", lambda *lines: sent.append(lines) or True)
    sdnotify.Reporter("src", "/m").running(1, False, f"x\nREADY=1\nSTATUS={FORGED}")
    ((line,),) = sent
    assert line.startswith("STATUS=offline (x\\nREADY=1\\nSTATUS=boom\\n") and "\n" not in line
