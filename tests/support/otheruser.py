"""Acting as another local user, for the tests of what one user's mount shows others.

The suite runs as root; "another user" is `nobody`. Programs run under it with
`setpriv`; Python code runs in an interpreter started as us that drops to `nobody`
after its imports (the interpreter's own files may be unreadable to `nobody`), so
everything it does after `become_other()` (listen, connect, open) is done as `nobody`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

OTHER_UID = 65534  # nobody
OTHER_GID = 65534

_DROP = f"""
import json, os, socket, sys
def become_other():
    os.setgroups([])
    os.setgid({OTHER_GID})
    os.setuid({OTHER_UID})
"""


def run_as_other(argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a program as the other user (no supplementary groups)."""
    return subprocess.run(
        ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_GID}", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def can_read(path: str) -> bool:
    """Whether the other user can read the file, or list the directory, at `path`."""
    probe = ["ls", "-A", "--", path] if os.path.isdir(path) else ["head", "-c", "1", "--", path]
    return run_as_other(probe).returncode == 0


def python_as_other(code: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    """Start `code` (which calls become_other() once it is ready to drop to the other
    user; json, os, socket and sys are imported) in a Python of its own."""
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", _DROP + code, *args], text=True, **popen
    )
