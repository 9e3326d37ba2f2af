"""The backends the shared mount suite runs on, all served by one real server process.

Each names how to mount a repo of that server (SRC, extra arguments, credentials) and
its adapter, whose declared capabilities say what the backend can do, so a test
asserts the documented behaviour where a backend cannot (say, EPERM for unlink on
Terminal Use) instead of skipping.
"""

from __future__ import annotations

from dataclasses import dataclass

from repomount.remotes.base import Remote
from repomount.remotes.native import NativeRemote
from repomount.remotes.oxen import OxenRemote
from repomount.remotes.relace import RelaceRemote
from repomount.remotes.sentry import SentryRemote
from repomount.remotes.terminaluse import TerminalUseRemote
from support.server import ServerProc


@dataclass(frozen=True)
class Backend:
    name: str
    scheme: str  # "" for the native http://HOST:PORT/REPO
    face: str  # the server's path prefix of this dialect
    key_env: str
    adapter: type[Remote]  # what it can do comes from the adapter's own declaration
    namespace: str = ""  # put before the repo's name in SRC ("repomount/" for Oxen)

    @property
    def can(self) -> frozenset[str]:
        caps = self.adapter.capabilities
        can = {name for name in CAPABILITY_OPS if getattr(caps, name)}
        if caps.rename:
            can.add("dir_rename")  # a directory's rename is the rename of what is below
        return frozenset(can)

    def src(self, server: ServerProc, repo: str) -> str:
        if not self.scheme:
            return f"{server.url}/{repo}"
        return f"{self.scheme}:{self.namespace}{repo}"

    def extra_args(self, server: ServerProc) -> list[str]:
        return [] if not self.scheme else ["--endpoint", f"{server.url}{self.face}"]

    def env(self, server: ServerProc) -> dict[str, str]:
        return {self.key_env: server.token}

    def __str__(self) -> str:
        return self.name


# Capabilities (remotes/base.py) whose absence the mount tests assert as a refusal, or
# as the documented local fallback.
CAPABILITY_OPS = (
    "delete",
    "rename",
    "empty_dirs",
    "file_modes",
    "file_mtimes",
    "change_feed",
    "symlinks",
)
ALL_OPS = {*CAPABILITY_OPS, "dir_rename"}

BACKENDS = {
    "native": Backend("native", "", "/v1", "REPOMOUNT_TOKEN", NativeRemote),
    "relace": Backend("relace", "relace", "/relace/v1", "RELACE_API_KEY", RelaceRemote),
    "terminaluse": Backend(
        "terminaluse", "terminaluse", "/terminaluse", "TERMINALUSE_API_KEY", TerminalUseRemote
    ),
    # Every store repository is the Oxen repository repomount/NAME (face at the root).
    "oxen": Backend("oxen", "oxen", "", "OXEN_API_KEY", OxenRemote, namespace="repomount/"),
    # Every store repository is a release of every organization and project (face at /api/0).
    "sentry": Backend(
        "sentry", "sentry", "", "SENTRY_AUTH_TOKEN", SentryRemote, namespace="acme/web/"
    ),
}
