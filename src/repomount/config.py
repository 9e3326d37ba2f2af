"""Where a mount keeps its files: XDG cache and state directories, one per remote."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_cache_root() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "repomount"


def default_state_root() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / "repomount"


def mount_slug(identity: str) -> str:
    """A directory name for one remote: readable prefix plus a hash for uniqueness."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", identity)[-48:].strip("_")
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return f"{readable}-{digest}"
