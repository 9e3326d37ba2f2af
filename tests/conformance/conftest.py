"""The Terminal Use SDK tests' fixtures (support.tusdk), shared by
test_terminaluse_sdk.py and test_terminaluse_sdk_archives.py."""

from __future__ import annotations

from support.tusdk import fs, tu

__all__ = ["fs", "tu"]
