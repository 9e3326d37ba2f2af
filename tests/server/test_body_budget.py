"""Request bodies read whole into memory share one budget (server/bodybudget.py).

Each JSON body or Oxen form is bounded alone (64 MiB, 256 MiB), but many sent at once
were not: six 96 MiB Oxen uploads to one repo, waiting their turn for its lock, held
six bodies and six parsed copies, over a gigabyte. A body past 1 MiB is read only once
the budget has room for it (and its copies), held until its answer is sent.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import pytest
import trio

from repomount.server.bodybudget import SMALL, BodyBudget, HeldBodies, room_for
from support.server import ServerProc
from support.util import in_parallel

MiB = 1 << 20
PARALLEL = 6
SIZE = 96 * MiB
# Without the budget the peak grew by about PARALLEL x 2 x SIZE (1,152 MiB); with it,
# two forms at a time (2 x 2 x SIZE, 384 MiB) and what storing them takes.
GROWTH_LIMIT_KIB = 640 << 10


def test_parallel_oxen_uploads_wait_for_room_instead_of_taking_memory(server: ServerProc) -> None:
    server.create_repo("many")
    headers = {"Authorization": f"Bearer {server.token}"}
    base = f"{server.url}/api/repos/repomount/many"
    before = server.rss_peak_kib()
    statuses: list[int] = []

    def upload(i: int) -> None:
        data = bytes([i + 1]) * SIZE
        with httpx.Client(base_url=base, headers=headers, timeout=120) as c:
            part = ("file", (f"f{i}.bin", data, "application/octet-stream"))
            statuses.append(c.put(f"/file/main/f{i}.bin", files=[part]).status_code)

    in_parallel(upload, PARALLEL)
    growth = server.rss_peak_kib() - before
    assert statuses == [200] * PARALLEL
    assert growth < GROWTH_LIMIT_KIB, f"the server's peak RSS grew by {growth >> 10} MiB"
    with server.client() as native:
        entries = native.get("/v1/repos/many/tree", params={"path": ""}).json()["entries"]
    assert sorted((e["path"], e["size"]) for e in entries) == [
        (f"f{i}.bin", SIZE) for i in range(PARALLEL)
    ]


async def test_bodies_take_room_in_order_and_small_ones_never_wait() -> None:
    budget = BodyBudget(total=10 * MiB)
    taken: list[str] = []

    async def hold(name: str, size: int, until: trio.Event) -> None:
        async def app(scope: object, receive: object, send: object) -> None:
            await room_for(size)
            taken.append(name)
            await until.wait()

        await HeldBodies(app, budget)({"type": "http"}, None, None)  # type: ignore[arg-type]

    first, second, third = trio.Event(), trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, "a", 6 * MiB, first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(hold, "b", 6 * MiB, second)  # waits: 4 MiB free
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(hold, "c", 2 * MiB, third)  # room, but b came first
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(hold, "small", SMALL, trio.Event())  # never waits
        await trio.testing.wait_all_tasks_blocked()
        assert taken == ["a", "small"] and budget.free == 4 * MiB
        first.set()  # a's answer is sent: its room is given back
        await trio.testing.wait_all_tasks_blocked()
        assert taken == ["a", "small", "b", "c"] and budget.free == 2 * MiB
        second.set()
        third.set()
        await trio.testing.wait_all_tasks_blocked()
        assert budget.free == 10 * MiB
        nursery.cancel_scope.cancel()


async def test_a_body_larger_than_the_budget_runs_alone_and_a_cancelled_wait_holds_nothing() -> (
    None
):
    budget = BodyBudget(total=10 * MiB)
    assert await budget.take(50 * MiB) == 10 * MiB and budget.free == 0
    with trio.move_on_after(0.1) as waited:
        await budget.take(2 * MiB)
    assert waited.cancelled_caught and budget.free == 0
    budget.give(10 * MiB)
    assert await budget.take(2 * MiB) == 2 * MiB and budget.free == 8 * MiB


@pytest.mark.parametrize("size", [0, SMALL])
async def test_outside_a_request_nothing_is_held(size: int) -> None:
    await room_for(size)
    await room_for(64 * MiB)  # (no HeldBodies around: a store call in a test, say)


@pytest.mark.parametrize(
    ("status", "collected"), [(201, 0), (404, 1), (422, 1), (None, 1)], ids=str
)
async def test_a_full_collection_follows_a_large_body_only_when_its_request_failed(
    monkeypatch: pytest.MonkeyPatch, status: int | None, collected: int
) -> None:
    """A refusal's traceback may hold what was parsed, in a cycle: collected before the
    room goes back. A full collection holds the event loop (10-30 ms, 60-170 ms while
    another large body is parsed): after every large request that succeeded, it found
    nothing to free."""
    collections: list[int] = []
    monkeypatch.setattr("repomount.server.bodybudget.gc.collect", lambda: collections.append(1))
    budget = BodyBudget(64 * MiB)

    async def app(scope: object, receive: object, send: Any) -> None:
        await room_for(2 * MiB)
        if status is None:
            raise RuntimeError("failed before answering")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: object) -> None:
        pass

    held = HeldBodies(app, budget)
    with pytest.raises(RuntimeError) if status is None else contextlib.nullcontext():
        await held({"type": "http"}, None, send)
    assert len(collections) == collected
    assert budget.free == budget.total
