"""A `Remote` wrapper that injects the failures a real network and service produce.

- `fail_next(n, ...)` / `fail_rate(p, ...)`: the next n calls (or each call with
  probability p, from a seeded `random.Random`) of the given methods fail, as:
  "unavailable" (a 5xx, with an optional Retry-After), "timeout" (a `trio.sleep`, then
  Unavailable), or "lost" (the inner remote does the work, then the answer is lost:
  Unavailable; for apply that is "applied but unanswered").
- `slow_listing(path)`: the next listing of `path` is taken from the inner remote when
  the request starts, then held until the test releases it (or `delay` passes), and the
  OLD snapshot is returned: a listing that lands after whatever happened meanwhile.
  `snapshot=` serves a listing captured earlier instead (a lagging replica).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Literal

import trio

from repomount.remotes.base import (
    ApplyResult,
    Change,
    Content,
    Entry,
    Fetched,
    Listing,
    Remote,
    RemoteError,
    RepoInfo,
    Unavailable,
)

FaultKind = Literal["unavailable", "timeout", "lost"]
Method = Literal["info", "list_tree", "stat", "read", "apply"]
ALL_METHODS: tuple[Method, ...] = ("info", "list_tree", "stat", "read", "apply")

if TYPE_CHECKING:
    from repomount.vfs.core import Vfs


@dataclass
class _Fault:
    methods: frozenset[str]
    kind: FaultKind
    left: int | None = None  # calls still to fail; None: by rate
    rate: float = 0.0
    retry_after: float | None = None
    delay: float = 0.0  # for "timeout": how long the request hangs first


@dataclass
class SlowListing:
    """One held listing: `started` is set once its (old) snapshot was taken."""

    path: str
    delay: float | None = None
    snapshot: Listing | None = None
    started: trio.Event = field(default_factory=trio.Event)
    released: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)

    def release(self) -> None:
        self.released.set()


class FaultyRemote(Remote):
    def __init__(self, inner: Remote, *, seed: int = 0) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.rng = random.Random(seed)
        self.calls: Counter[str] = Counter()  # every call, failed or not
        self.injected: Counter[str] = Counter()  # failures injected, by method
        self._faults: list[_Fault] = []
        self._slow: list[SlowListing] = []

    @property
    def identity(self) -> str:
        return self.inner.identity

    # ------------------------------------------------------------------ arming

    def fail_next(
        self,
        n: int = 1,
        *,
        methods: Sequence[Method] = ("apply",),
        kind: FaultKind = "unavailable",
        retry_after: float | None = None,
        delay: float = 1.0,
    ) -> None:
        self._faults.append(_Fault(frozenset(methods), kind, n, 0.0, retry_after, delay))

    def fail_rate(
        self,
        rate: float,
        *,
        methods: Sequence[Method] = ALL_METHODS,
        kind: FaultKind = "unavailable",
        retry_after: float | None = None,
        delay: float = 1.0,
    ) -> None:
        self._faults.append(_Fault(frozenset(methods), kind, None, rate, retry_after, delay))

    def heal(self) -> None:
        """No more injected failures (held listings stay held)."""
        self._faults.clear()

    def slow_listing(
        self, path: str, *, delay: float | None = None, snapshot: Listing | None = None
    ) -> SlowListing:
        slow = SlowListing(path, delay, snapshot)
        self._slow.append(slow)
        return slow

    def disarm(self, slow: SlowListing) -> None:
        """Drop a held listing no request picked up."""
        if slow in self._slow:
            self._slow.remove(slow)

    # ------------------------------------------------------------------ injection

    def _pick(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if method not in fault.methods:
                continue
            if fault.left is not None:
                if fault.left <= 0:
                    continue
                fault.left -= 1
                return fault
            if self.rng.random() < fault.rate:
                return fault
        return None

    async def _before(self, method: str) -> _Fault | None:
        """Counts the call; raises for unavailable/timeout; returns a "lost" fault."""
        self.calls[method] += 1
        fault = self._pick(method)
        if fault is None:
            return None
        self.injected[method] += 1
        if fault.kind == "lost":
            return fault
        if fault.kind == "timeout":
            await trio.sleep(fault.delay)  # not a wait: the injected fault is a slow call
            raise Unavailable(f"injected: {method} timed out")
        raise Unavailable(f"injected: {method} got 503", status=503, retry_after=fault.retry_after)

    @staticmethod
    def _lost(method: str) -> Unavailable:
        return Unavailable(f"injected: the answer to {method} was lost")

    # ------------------------------------------------------------------ the interface

    async def info(self) -> RepoInfo:
        lost = await self._before("info")
        got = await self.inner.info()
        if lost:
            raise self._lost("info")
        return got

    async def list_tree(self, path: str, *, recursive: bool = False) -> Listing:
        lost = await self._before("list_tree")
        slow = next((s for s in self._slow if s.path == path), None)
        if slow is None:
            got = await self.inner.list_tree(path, recursive=recursive)
        else:
            self._slow.remove(slow)
            got = await self._held(slow, recursive)
        if lost:
            raise self._lost("list_tree")
        return got

    async def _held(self, slow: SlowListing, recursive: bool) -> Listing:
        error: RemoteError | None = None
        got = slow.snapshot
        if got is None:
            try:
                got = await self.inner.list_tree(slow.path, recursive=recursive)
            except RemoteError as e:
                error = e
        slow.started.set()
        try:
            if slow.delay is None:
                await slow.released.wait()
            else:
                with trio.move_on_after(slow.delay):
                    await slow.released.wait()
        finally:
            slow.done.set()
        if error is not None:
            raise error
        assert got is not None
        return got

    async def stat(self, path: str) -> Entry | None:
        lost = await self._before("stat")
        got = await self.inner.stat(path)
        if lost:
            raise self._lost("stat")
        return got

    async def read(
        self,
        path: str,
        dest: BinaryIO,
        *,
        version: str | None = None,
        offset: int = 0,
        length: int | None = None,
    ) -> Fetched:
        lost = await self._before("read")
        got = await self.inner.read(path, dest, version=version, offset=offset, length=length)
        if lost:
            raise self._lost("read")
        return got

    async def apply(self, changes: Sequence[Change], *, base: str | None = None) -> ApplyResult:
        lost = await self._before("apply")
        got = await self.inner.apply(changes, base=base)
        if lost:
            raise self._lost("apply")  # applied, but the answer never came
        return got

    async def upload_ahead(self, contents: Sequence[Content]) -> set[str]:
        lost = await self._before("upload_ahead")
        got = await self.inner.upload_ahead(contents)
        if lost:
            raise self._lost("upload_ahead")  # stored, but the answer never came
        return got

    def version_of(self, sha256: str) -> str | None:
        return self.inner.version_of(sha256)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def listing_in_flight(
    faulty: FaultyRemote, vfs: Vfs, path: str = ""
) -> AsyncIterator[SlowListing]:
    """A listing of `path` under way (it has read the remote) and held for the body's
    length: the body acts while it is in flight, and `release()`s it to let it land."""
    slow = faulty.slow_listing(path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(vfs.refresh_dirs, [path])
        await slow.started.wait()
        yield slow
