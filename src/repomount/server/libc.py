"""A function of the C library that Python's `os` may lack (syncfs before Python 3.13,
sync_file_range), reached through ctypes; ctypes lets go of the GIL for the call."""

from __future__ import annotations

import ctypes
from typing import Any


def function(name: str, argtypes: list[Any]) -> Any | None:
    """The C library's `name` returning an int, or None where it has none."""
    try:
        call = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError, TypeError):
        return None
    call.argtypes = argtypes
    call.restype = ctypes.c_int
    return call
