"""The backends the shared mount suite runs on, all served by one real server process.

Each names how to mount a repo of that server (SRC, extra arguments, credentials) and
what the backend can do, so a test asserts the documented behaviour where a backend
cannot do something (say, EPERM for unlink on Terminal Use) instead of skipping.
"""

from __future__ import annotations

from dataclasses import dataclass

from support.server import ServerProc


@dataclass(frozen=True)
class Backend:
    name: str
    scheme: str  # "" for the native http://HOST:PORT/REPO
    face: str  # the server's path prefix of this dialect
    key_env: str
    can: frozenset[str]

    def src(self, server: ServerProc, repo: str) -> str:
        return f"{server.url}/{repo}" if not self.scheme else f"{self.scheme}:{repo}"

    def extra_args(self, server: ServerProc) -> list[str]:
        return [] if not self.scheme else ["--endpoint", f"{server.url}{self.face}"]

    def env(self, server: ServerProc) -> dict[str, str]:
        return {self.key_env: server.token}

    def __str__(self) -> str:
        return self.name


ALL_OPS = {
    "delete",
    "rename",
    "dir_rename",
    "empty_dirs",
    "file_modes",
    "change_feed",
    "symlinks",
}

BACKENDS = {
    "native": Backend("native", "", "/v1", "REPOMOUNT_TOKEN", frozenset(ALL_OPS)),
    "relace": Backend(
        "relace",
        "relace",
        "/relace/v1",
        "RELACE_API_KEY",
        frozenset({"delete", "rename", "dir_rename"}),
    ),
    "terminaluse": Backend(
        "terminaluse", "terminaluse", "/terminaluse", "TERMINALUSE_API_KEY", frozenset()
    ),
}
