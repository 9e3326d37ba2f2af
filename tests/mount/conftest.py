from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.mountfixtures import mnt, mount_factory, pytest_generate_tests
from support.server import ServerProc

__all__ = ["mnt", "mount_factory", "pytest_generate_tests"]


@pytest.fixture
def server(live: ServerProc) -> Iterator[ServerProc]:
    """The module's server (`live`), shared by its tests for speed: starting a server
    costs about a second, and there are hundreds of mount tests. Sharing is safe because
    every test mounts repos of its own (mount_factory names them uniquely), counts
    requests from its own `server.mark()`, and its mounts are stopped before the next
    test starts. A test may stop and start it (the offline tests do); one that failed
    while it was stopped gets it started again here."""
    if not live.running:
        live.start()
    yield live
