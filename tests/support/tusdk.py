"""What the Terminal Use SDK conformance tests share (tests/conformance/
test_terminaluse_sdk.py and test_terminaluse_sdk_archives.py; tests/conformance/conftest.py
hands them the fixtures): a client of the face, a filesystem to drive, and the helpers
both use."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from terminaluse.client import TerminalUseBase

from support.server import ServerProc

# Otherwise the SDK retries 409 and 5xx twice, sleeping 1 s and 2 s.
NO_RETRY: Any = {"max_retries": 0}
_ids = itertools.count()


@pytest.fixture
def tu(live: ServerProc) -> TerminalUseBase:
    return TerminalUseBase(base_url=f"{live.url}/terminaluse", token=live.token, agent_api_key="")


@pytest.fixture
def fs(live: ServerProc) -> str:
    """A filesystem made through the native API: every store repo is one."""
    name = f"repo{next(_ids)}"
    live.create_repo(name)
    return name


def head(live: ServerProc, repo: str) -> int:
    with live.client() as c:
        return int(c.get(f"/v1/repos/{repo}").json()["head"])


def base_of(tu: TerminalUseBase, fs: str) -> str:
    checksum = tu.filesystems.retrieve(fs).archive_checksum
    assert checksum is not None
    return checksum
