"""The content cache keeps within its size limit, dropping least recently used first; it
keeps nothing per entry in memory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from repomount.vfs.content import MIN_FREE_SHARE, ContentCache
from support import smalldisk

MIB = 1 << 20


def _put(cache: ContentCache, name: str, size: int, when: float) -> Path:
    tmp = cache.temp_path()
    tmp.write_bytes(b"x" * size)
    p = cache.commit(tmp, name, "v1")
    assert p is not None
    cache.wait_evicted()
    os.utime(p, (when, when))
    return p


def test_eviction_drops_least_recently_used(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, limit=3000, touch_after=0)
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


def test_a_landed_blob_is_linked_in_and_outlives_the_blob(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", limit=10_000)
    blob = tmp_path / "blob"
    blob.write_bytes(b"uploaded")
    entry = cache.link_in(blob, "dir/f.txt", "v1")
    assert entry is not None and cache.lookup("dir/f.txt", "v1") == str(entry)
    assert os.stat(entry).st_ino == os.stat(blob).st_ino  # a link, not a copy
    blob.unlink()  # the journal lets its blob go once the rows are done
    assert entry.read_bytes() == b"uploaded"
    assert cache.usage() == len(b"uploaded")
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_linking_over_an_entry_replaces_it_and_counts_it_once(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", limit=10_000)
    first, second = tmp_path / "b1", tmp_path / "b2"
    first.write_bytes(b"one")
    second.write_bytes(b"second")
    cache.link_in(first, "f", "v1")
    entry = cache.link_in(second, "f", "v1")
    assert entry is not None and entry.read_bytes() == b"second"
    assert cache.usage() == len(b"second")
    # and a file left by hand is replaced too; the count, off by what the hand did, is
    # made exact by the next walk of the disk
    stray = cache.cached_path("g", "v1")
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"stray")
    assert cache.link_in(first, "g", "v1") == stray
    assert stray.read_bytes() == b"one"
    assert ContentCache(tmp_path / "cache").usage() == len(b"second") + len(b"one")
    cache.evict()
    assert cache.usage() == len(b"second") + len(b"one")


def test_the_same_content_linked_again_keeps_the_entry_there(tmp_path: Path) -> None:
    """A file saved unchanged lands as the version cached already: the entry stays (no
    replace, whose freeing of the old file's blocks cost the event loop 0.2-0.4 ms)."""
    cache = ContentCache(tmp_path / "cache", limit=10_000)
    first, again = tmp_path / "b1", tmp_path / "b2"
    first.write_bytes(b"same")
    again.write_bytes(b"same")
    entry = cache.link_in(first, "f", "v1")
    assert entry is not None
    inode = os.stat(entry).st_ino
    assert cache.link_in(again, "f", "v1") == entry
    assert os.stat(entry).st_ino == inode and entry.read_bytes() == b"same"
    assert cache.usage() == len(b"same")
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_a_link_refused_leaves_the_cache_as_it_was(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", limit=10_000)
    assert cache.link_in(tmp_path / "gone", "f", "v1") is None  # ENOENT: read later
    assert cache.lookup("f", "v1") is None and cache.usage() == 0


def test_a_cache_directory_removed_by_hand_is_made_again(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache", limit=10_000)
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    first = cache.link_in(blob, "f", "v0")
    assert first is not None
    # another version whose entry lives in the same directory
    other = next(
        f"v{i}" for i in range(1, 10_000) if cache.cached_path("f", f"v{i}").parent == first.parent
    )
    first.unlink()
    first.parent.rmdir()
    again = cache.link_in(blob, "f", other)
    assert again is not None and again.parent == first.parent
    assert again.read_bytes() == b"x" and cache.lookup("f", other) == str(again)


def test_the_whole_cache_removed_by_hand_is_made_again(tmp_path: Path) -> None:
    import shutil

    cache = ContentCache(tmp_path / "cache", limit=10_000)
    first = _put(cache, "a", 10, 100)
    shutil.rmtree(tmp_path / "cache")
    assert cache.lookup("a", "v1") is None  # a miss, fetched again
    tmp = cache.temp_path()
    tmp.write_bytes(b"again")  # (its directory is there again)
    entry = cache.commit(tmp, "a", "v1")
    assert entry == first and entry.read_bytes() == b"again"
    assert cache.lookup("a", "v1") == str(entry)
    shutil.rmtree(tmp_path / "cache")
    cache.evict()  # (a walk over nothing: not an error)
    assert cache.usage() == 0


def test_a_shard_directory_removed_by_hand_is_made_again(tmp_path: Path) -> None:
    import shutil

    from repomount.vfs.content import content_key

    cache = ContentCache(tmp_path)
    first = _put(cache, "a", 10, 100)
    shard = content_key("a", "v1")[:2]
    other = next(f"b{i}" for i in range(10_000) if content_key(f"b{i}", "v1")[:2] == shard)
    shutil.rmtree(first.parent)
    again = _put(cache, other, 10, 200)  # (commit)
    assert again.parent == first.parent and again.read_bytes() == b"x" * 10
    shutil.rmtree(first.parent)
    src = tmp_path / "src"
    src.write_bytes(b"linked")
    third = next(f"c{i}" for i in range(10_000) if content_key(f"c{i}", "v2")[:2] == shard)
    linked = cache.link_in(src, third, "v2")  # (link_in)
    assert linked is not None and linked.read_bytes() == b"linked"
    assert cache.lookup(third, "v2") == str(linked)


def test_the_index_is_rebuilt_from_disk(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, limit=10_000)
    kept = _put(cache, "kept", 100, 100)
    again = ContentCache(tmp_path, limit=10_000)
    assert again.lookup("kept", "v1") == str(kept) and again.usage() == 100


def test_the_disk_is_the_index(tmp_path: Path) -> None:
    """A second cache over the same directory sees an entry the first one added, and the
    first sees one the second dropped as gone (memory per entry: test_memory_bound.py)."""
    cache = ContentCache(tmp_path, limit=10_000)
    other = ContentCache(tmp_path, limit=10_000)
    _put(cache, "a", 10, 100)
    assert other.has("a", "v1") and other.lookup("a", "v1") is not None
    os.unlink(other.cached_path("a", "v1"))
    assert not cache.has("a", "v1") and cache.lookup("a", "v1") is None


def test_a_lookup_counts_as_a_use(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, limit=10_000, touch_after=0)
    p = _put(cache, "a", 10, 100)
    assert cache.has("a", "v1") and p.stat().st_mtime == 100  # (has: not a use)
    assert cache.lookup("a", "v1") == str(p) and p.stat().st_mtime > 100


def test_a_use_is_written_once_a_minute(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, limit=10_000)
    p = _put(cache, "a", 10, 100)  # (its change time: now)
    assert cache.lookup("a", "v1") == str(p) and p.stat().st_mtime == 100


def test_a_use_that_cannot_be_written_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ContentCache(tmp_path, limit=10_000, touch_after=0)
    p = _put(cache, "a", 10, 100)

    def refused(*args: object) -> None:
        raise PermissionError(1, "read-only")

    monkeypatch.setattr(os, "utime", refused)
    assert cache.lookup("a", "v1") == str(p)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB filesystem of the test's own."""
    with smalldisk.small_disk(tmp_path / "small", "16m") as d:
        yield d


def test_the_cache_keeps_a_share_of_its_disk_free(small_disk: Path) -> None:
    """Far below its size limit, the cache still keeps MIN_FREE_SHARE of its disk free
    (it shares the disk with the user's home and the journal): 40 entries of 1 MiB
    pass through a 16 MiB disk, each download has room, the newest stay."""
    cache = ContentCache(small_disk, limit=10 << 30)
    keep_free = int(16 * MIB * MIN_FREE_SHARE)
    for i in range(40):
        _put(cache, f"f{i}", MIB, 1000 + i)  # (ENOSPC here, before: the disk filled)
        assert shutil.disk_usage(small_disk).free >= keep_free - MIB
    assert cache.lookup("f39", "v1") is not None and cache.lookup("f0", "v1") is None


def test_a_growing_download_makes_room_before_the_disk_is_full(small_disk: Path) -> None:
    cache = ContentCache(small_disk, limit=10 << 30)
    for i in range(12):
        _put(cache, f"f{i}", MIB, 1000 + i)
    tmp = cache.temp_path()
    with tmp.open("wb") as f:  # 10 MiB more, told as it comes (partial.py's streams)
        for _ in range(40):
            f.write(b"y" * (MIB // 4))
            f.flush()
            cache.growing(MIB // 4)
            cache.wait_evicted()
    assert cache.commit(tmp, "big", "v1") is not None
