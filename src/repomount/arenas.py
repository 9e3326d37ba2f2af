"""Fewer malloc arenas in the mount daemon.

glibc gives threads that allocate at once arenas of their own, up to eight per core,
and memory freed into an arena stays there for its next allocations. The daemon's
worker threads (bulk reads' files, hashing, the journal's syncs) take turns, so the
process held several copies of its transient peak: a `git status` reading 100,000
files raised the mount's peak RSS by 15-18 MiB with the default, 7 MiB with two arenas
(`scripts/bench --scale 100000`), at the same speed. A limit set in the environment
(MALLOC_ARENA_MAX, or glibc.malloc.arena_max in GLIBC_TUNABLES) is left to glibc.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_ARENA_MAX = -8  # mallopt's parameter (malloc.h)
ARENAS = 2  # the main arena and one that every other thread shares


def limit_arenas() -> bool:
    """Ask glibc for at most ARENAS arenas; whether it took the setting (False: not
    glibc, or the environment chose)."""
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    if "glibc.malloc.arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, ARENAS))
