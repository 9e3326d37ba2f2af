"""The content cache keeps within its size limit, dropping least recently used first."""

from __future__ import annotations

import os
from pathlib import Path

from repomount.vfs.content import ContentCache


def _put(cache: ContentCache, name: str, size: int, when: float) -> Path:
    tmp = cache.temp_path()
    tmp.write_bytes(b"x" * size)
    p = cache.commit(tmp, name, "v1")
    os.utime(p, (when, when))
    return p


def test_eviction_drops_least_recently_used(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, limit=3000)
    _put(cache, "old", 1000, 100)
    _put(cache, "used", 1000, 200)
    _put(cache, "mid", 1000, 300)
    assert cache.lookup("used", "v1") is not None  # touched: now the most recent
    fresh = _put(cache, "new", 1000, 400)  # 4000 > 3000: evict down to 2700
    assert fresh.exists()
    assert cache.lookup("old", "v1") is None
    assert cache.lookup("used", "v1") is not None
    remaining = sum(f.stat().st_size for f in (tmp_path / "content").glob("*/*"))
    assert remaining <= 3000


def test_an_open_entry_stays_readable_after_eviction(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, limit=1500)
    p = _put(cache, "a", 1000, 100)
    with p.open("rb") as f:
        _put(cache, "b", 1000, 200)
        assert cache.lookup("a", "v1") is None
        assert f.read() == b"x" * 1000


def test_size_is_counted_across_restarts(tmp_path: Path) -> None:
    _put(ContentCache(tmp_path, limit=10_000), "a", 2000, 100)
    cache = ContentCache(tmp_path, limit=2500)
    _put(cache, "b", 1000, 200)
    assert cache.lookup("a", "v1") is None and cache.lookup("b", "v1") is not None
