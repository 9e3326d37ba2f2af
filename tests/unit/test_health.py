"""Online or not: a remote that answers "busy" (423 locked, 429 too many requests, a
tree that kept changing while listed) is there; one that does not answer, or answers
5xx, is away (reads from the cache, `status` says offline)."""

from __future__ import annotations

import pytest

from repomount.remotes.base import Unavailable
from repomount.vfs.health import Health


@pytest.mark.parametrize(
    "busy",
    [
        Unavailable("locked", status=423),
        Unavailable("slow down", status=429, retry_after=2.0),
        Unavailable("the tree kept changing while it was being listed", busy=True),
    ],
)
def test_a_busy_remote_stays_online(busy: Unavailable) -> None:
    health = Health()
    health.failed(busy)
    assert health.online
    assert health.error is not None and busy.message in health.error  # (status shows it)
    assert not health.usable  # (listings serve what is known meanwhile, as offline)
    health.ok()
    assert health.online and health.usable and health.error is None


@pytest.mark.parametrize(
    "away", [Unavailable("connection refused"), Unavailable("bad gateway", status=502)]
)
def test_a_remote_that_does_not_answer_is_offline_until_it_does(away: Unavailable) -> None:
    health = Health()
    backs: list[bool] = []
    health.on_back = lambda: backs.append(True)
    health.failed(away)
    assert not health.online and not health.usable
    health.ok()
    assert health.online and health.usable and backs == [True]
