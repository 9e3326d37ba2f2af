"""Mount option values and defaults that the command line and the vfs share.

Importing this loads nothing else of repomount, so `repomount serve` (and `--help`) load
no client code: no vfs, no FUSE, no trio.
"""

from __future__ import annotations

import enum


class Policy(enum.Enum):
    """What a mount does when a change it sends finds the remote changed (--on-conflict)."""

    KEEP_BOTH = "keep-both"  # local content goes up next to the file; the remote's stays
    FAIL = "fail"  # keep the change pending; fsync reports ESTALE
    MINE = "mine"  # overwrite the remote
    THEIRS = "theirs"  # take the remote; the local copy is kept in the state dir


# How long stopping a mount (SIGTERM, `repomount unmount`) waits for pending uploads;
# what is left stays in the journal for the next mount.
DEFAULT_DRAIN_TIMEOUT = 60.0

# Names that stay on local disk: vim swap and test files, backups, emacs and
# LibreOffice lock files.
DEFAULT_LOCAL_ONLY = (".*.sw?", "*~", ".#*", "#*#", "4913", ".~lock.*#")


# How long a remote may take (docs/semantics.md, "Failures"); `repomount mount` options.
CONNECT_TIMEOUT = 10.0  # seconds to open a connection
ANSWER_TIMEOUT = 60.0  # seconds from a request sent to the first byte of its answer
READ_TIMEOUT = 30.0  # seconds of silence in the middle of an answer (or of a request)
MIN_RATE = 32 << 10  # bytes/s: an answer of n bytes may take READ_TIMEOUT + n / MIN_RATE
