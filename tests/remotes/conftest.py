"""The native adapter's fixtures (support.nativefixtures), shared by test_native.py and
test_native_apply.py. A module that defines a fixture of the same name (every other
adapter's, and test_native_bulk.py) uses its own."""

from __future__ import annotations

from support.nativefixtures import remote, repo, write

__all__ = ["remote", "repo", "write"]
