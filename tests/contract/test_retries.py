"""Contract: a change sent again (after a lost answer, or by a restarted mount) lands once.

Where the adapter documents idempotency keys (`Face.keys`), a change sent again with
its key is replayed: the same outcome, no second commit. Where it does not (Relace), the
documented behaviour is that the retry finds our own content there and reports
Conflicted with the version `version_of` derives from the change's hash, which the
write-back counts as applied. Either way the store holds the content once.
"""

from __future__ import annotations

import pytest

from contract.conftest import Face, Store, WriteFactory, mutating
from repomount.remotes.base import (
    Applied,
    Change,
    Conflicted,
    Expect,
    Failed,
    Outcome,
    Remote,
    RemoteError,
    Write,
)
from support.tap import Tap, once
from support.util import sha


def landed(remote: Remote, change: Write, outcome: Outcome) -> bool:
    """The outcome says the change is on the remote: applied now, or found there
    already (our own content, recognised through version_of)."""
    if outcome == Applied(version=remote.version_of(change.sha256)):
        return True
    ours = remote.version_of(change.sha256)
    return ours is not None and outcome == Conflicted(current=ours)


async def attempt(remote: Remote, changes: list[Change]) -> list[Outcome] | RemoteError:
    """One try of the write-back: the outcomes, or the error that failed the request."""
    try:
        return (await remote.apply(changes)).outcomes
    except RemoteError as error:
        return error


async def test_the_same_changes_twice_land_once(
    face: Face, store: Store, remote: Remote, write: WriteFactory
) -> None:
    """The same keyed changes applied twice by one adapter make one commit: with keys
    the second answer is the first one again, without them each change is recognised
    as already there."""
    changes: list[Change] = [
        write("a.txt", b"1", key="k-a"),
        write("d/b.txt", b"2", expect=Expect.ABSENT, key="k-b"),
    ]
    head = store.head()
    first = await remote.apply(changes)
    assert first.outcomes == [
        Applied(version=store.version(b"1")),
        Applied(version=store.version(b"2")),
    ]
    landed_at = store.head()
    again = await remote.apply(changes)
    if face.keys:
        assert again.outcomes == first.outcomes
    else:
        assert again.outcomes == [
            Conflicted(current=remote.version_of(sha(b"1"))),
            Conflicted(current=remote.version_of(sha(b"2"))),
        ]
    assert store.head() == landed_at > head
    assert store.files() == {"a.txt": b"1", "d/b.txt": b"2"}


async def test_a_restarted_mount_sending_a_change_again_lands_it_once(
    face: Face, store: Store, remote: Remote, write: WriteFactory
) -> None:
    """A new adapter (a restarted mount replaying its journal) sending a change that
    already landed gets it reported as landed (replayed, or recognised through
    version_of), and nothing is written again."""
    change = write("f.txt", b"mine", key="persisted-key")
    assert (await remote.apply([change])).outcomes == [Applied(version=store.version(b"mine"))]
    head = store.head()
    fresh = face.open(store.server, store.name)
    try:
        (outcome,) = (await fresh.apply([change])).outcomes
        assert landed(fresh, change, outcome), outcome
    finally:
        await fresh.aclose()
    assert store.head() == head
    assert store.files() == {"f.txt": b"mine"}


@pytest.mark.parametrize("key", ["flush-7", ""], ids=["key", "no-key"])
async def test_a_lost_answer_lands_once(
    face: Face, store: Store, write: WriteFactory, key: str
) -> None:
    """The server applies a change but its answer is lost on the way back. With a key,
    where the adapter supports keys, the adapter's own retry is replayed and apply()
    reports Applied at once. Otherwise apply() reports a retryable failure or the
    change as landed; the write-back's retry then sees it landed. Either way exactly
    one commit is made."""
    tap = Tap(drop=once(mutating))
    remote = face.open(store.server, store.name, transport=tap)
    change = write("f.txt", b"once", expect=Expect.ABSENT, key=key)
    head = store.head()
    try:
        tries = [await attempt(remote, [change])]
        while len(tries) < 4:
            last = tries[-1]
            if isinstance(last, RemoteError):
                assert last.retryable, last
            elif isinstance(last[0], Failed):
                assert last[0].retryable, last[0]
            else:
                break
            tries.append(await attempt(remote, [change]))
    finally:
        await remote.aclose()
    assert len(tap.dropped) == 1
    final = tries[-1]
    assert isinstance(final, list) and landed(remote, change, final[0]), tries
    if key and face.keys:
        assert tries == [[Applied(version=store.version(b"once"))]]
    assert store.head() == head + 1
    assert store.files() == {"f.txt": b"once"}
