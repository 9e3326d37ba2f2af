"""How `repomount status` words a pending change's error (statusview.py)."""

from __future__ import annotations

from repomount import statusview

ENTRY = {
    "op": "write",
    "path": "big",
    "bytes": 10 << 20,
    "age": 90.0,
    "tries": 6,
    "state": "pending",
    "error": "Unavailable: PUT /v1/repos/r/blobs/ab: 507 the server's disk is full",
}


def test_a_transient_error_is_said_on_its_line_while_the_remote_answers() -> None:
    """Other requests succeed (and clear the mount's last error): only the change's
    line can say why it is not going."""
    line = statusview.pending_line(ENTRY, online=True)
    assert "try 6: Unavailable: " in line and "disk is full" in line
    status = {"online": True, "pending": [ENTRY], "pending_changes": 1, "last_error": None}
    assert any("disk is full" in x for x in statusview.render(status, now=0.0))


def test_while_offline_the_shared_error_is_said_once() -> None:
    assert "Unavailable" not in statusview.pending_line(ENTRY, online=False)
    held = {**ENTRY, "state": "held", "error": "InvalidPath: bad name"}
    assert "held, try 6: InvalidPath: bad name" in statusview.pending_line(held)
