"""The layering holds at import time: the command line and the server load no client
code, and vfs/ loads neither FUSE nor HTTP (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _loaded_after(statement: str) -> list[str]:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout))


@pytest.mark.parametrize(
    "statement",
    ["import repomount.cli", "import repomount.server.run", "from repomount import options"],
)
def test_the_cli_and_the_server_load_no_client_code(statement: str) -> None:
    loaded = _loaded_after(statement)
    client = [
        m for m in loaded if m.split(".")[:2] in (["repomount", "vfs"], ["repomount", "fuse"])
    ]
    assert client == [], client
    assert "pyfuse3" not in loaded


def test_the_vfs_loads_neither_fuse_nor_http() -> None:
    loaded = _loaded_after("import repomount.vfs.core")
    assert not [m for m in loaded if m in ("pyfuse3", "httpx") or m.startswith("repomount.fuse")]


def test_the_cli_side_of_the_control_channel_loads_no_trio() -> None:
    """`repomount sync`, `status` and `unmount` talk to the mount with a blocking socket:
    importing trio would double their time (0.06 s of 0.13)."""
    loaded = _loaded_after("import repomount.cli, repomount.cli_control, repomount.control")
    assert [m for m in loaded if m.split(".")[0] in ("trio", "httpx", "pyfuse3")] == []
