"""The official `sentry-cli` (2.58.6: the last release with the release-file commands,
installed from its PyPI wheel as a test dependency), pointed at a test server.

It reads its server and token from SENTRY_URL and SENTRY_AUTH_TOKEN, and its settings
from a scratch HOME; it checks for no update and loads no `.env`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from support.server import ServerProc

VERSION = "2.58.6"
BINARY = Path(sys.executable).parent / "sentry-cli"


class SentryCli:
    def __init__(self, server: ServerProc, home: Path, org: str = "acme") -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.org = org
        self.env = {
            "HOME": str(home),
            "PATH": "/usr/bin:/bin",
            "SENTRY_URL": f"{server.url}/",
            "SENTRY_AUTH_TOKEN": server.token,
            "SENTRY_DISABLE_UPDATE_CHECK": "1",
            "SENTRY_LOAD_DOTENV": "0",
        }

    def run(
        self, *args: str, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BINARY), *args],
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"sentry-cli {' '.join(args)} failed:\n{done.stderr}")
        return done

    def files(
        self,
        release: str,
        *args: str,
        project: str | None = "web",
        check: bool = True,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`sentry-cli files --org ORG [--project P] --release R ARGS...`."""
        level: Sequence[str] = ("--project", project) if project else ()
        return self.run(
            "files", "--org", self.org, *level, "--release", release, *args, check=check, cwd=cwd
        )

    def version(self) -> str:
        return self.run("--version").stdout.strip()
