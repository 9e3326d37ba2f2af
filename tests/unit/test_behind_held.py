"""`behind_held`: which pending records wait behind a held one, and for which, as
`ready` holds them back (an overlapping path: the same, above or below, in turn)."""

from __future__ import annotations

import random

from repomount.vfs.records import Record
from repomount.vfs.scheduling import behind_held


def _naive(records: list[Record]) -> dict[int, int]:
    """Each record against every waiting one (what the one-pass index must find; the
    held record named may be another one it waits for too)."""

    def overlap(a: str, b: str) -> bool:
        return a == b or a.startswith(b + "/") or b.startswith(a + "/")

    out: dict[int, int] = {}
    waiting: list[tuple[Record, Record]] = []
    for rec in records:
        blocker = rec if rec.state == "held" else None
        if blocker is None:
            blocker = next(
                (h for w, h in waiting for p in rec.paths() for q in w.paths() if overlap(p, q)),
                None,
            )
        if blocker is None:
            continue
        if rec.state == "pending":
            out[rec.id] = blocker.id
        waiting.append((rec, blocker))
    return out


def test_the_index_finds_what_comparing_every_pair_finds() -> None:
    rng = random.Random(7)
    names = ["a", "a/b", "a/b/c", "a/c", "b", "b/a", "c", "ab", "a/bc"]
    for _ in range(300):
        records = []
        for i in range(1, rng.randint(1, 12)):
            op = rng.choice(["write", "mkdir", "delete", "rename"])
            dst = rng.choice(names) if op == "rename" else None
            state = "held" if rng.random() < 0.2 else "pending"
            records.append(Record(i, op, rng.choice(names), dst=dst, state=state))  # type: ignore[arg-type]
        found = behind_held(records)
        assert set(found) == set(_naive(records)), records
        assert all(h.state == "held" for h in found.values())


def test_a_held_mkdir_holds_back_what_is_below_it_and_nothing_beside() -> None:
    held = Record(1, "mkdir", "d", state="held")
    below = [Record(i, "write", f"d/f{i}") for i in range(2, 2000)]
    beside = [Record(i, "write", f"e/f{i}") for i in range(2000, 4000)]
    found = behind_held([held, *below, *beside])
    assert set(found) == {r.id for r in below}
    assert all(h is held for h in found.values())
