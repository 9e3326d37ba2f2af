from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.mountfixtures import mnt, mount_factory, pytest_generate_tests

__all__ = ["mnt", "mount_factory", "pytest_generate_tests"]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every local user can reach and write, like /tmp (sticky, 1777).
    pytest's own temporary directories sit under a 0700 directory, where nothing a
    test puts is visible to another user whatever its mode."""
    path = Path(tempfile.mkdtemp(prefix="repomount-security-"))
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
