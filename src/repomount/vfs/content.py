"""The on-disk content cache: fetched (or uploaded) content keyed by (path, version).

Files on disk, not bytes in RAM: an entry is a complete file, written to a temp name and
renamed into place, so a crash never leaves a torn entry.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path

import outcome
import trio

# Why a hard link into the cache may fail where a later read can fetch instead.
LINK_REFUSED = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOENT)
_ENTRY = re.compile(r"[0-9a-f]{64}")
_SHARD = re.compile(r"[0-9a-f]{2}")

log = logging.getLogger(__name__)

# Of the cache's disk, this share is kept free (as Mountpoint-S3 does by default): the
# cache usually shares its disk with the user's home, and with the state directory,
# whose journal must be able to write. Below it, eviction drops entries as over the limit.
MIN_FREE_SHARE = 0.05
# The disk is looked at every this many bytes that come, in entries or in downloads in
# progress (or every quarter of the free share, on a small disk)
GROWTH_CHECK = 8 << 20


def content_key(path: str, version: str) -> str:
    """The entry's file name."""
    return hashlib.sha256(f"{path}\0{version}".encode()).hexdigest()


class ContentCache:
    """`limit` bounds the bytes kept, and MIN_FREE_SHARE of the disk stays free; the
    least recently used entries go first (an entry open elsewhere stays readable through
    its descriptor after it is dropped).

    The disk is the index: an entry is its file, and its inode's change time is when it
    was last used (a lookup touches it, to the minute). Nothing per entry is kept in
    memory (an index of a walk that read 100,000 files cost 11 MiB); the bytes kept are
    counted as entries come and go, and made exact again by the walk of the disk that
    eviction makes: at start, and each time the cache passes its limit or its disk's
    free share (in a thread; it then drops to 90% of the limit, or to a tenth above the
    free share, and what arrives while it walks may take the cache past them until the
    next walk). An entry used or replaced after the walk saw it is kept."""

    def __init__(self, root: Path, limit: int = 10 << 30, touch_after: float = 60.0) -> None:
        self.root = root
        self.limit = limit
        self._grown = 0  # bytes that came since the disk was last looked at
        self._touch_after_ns = int(touch_after * 1e9)
        self.content_dir = root / "content"
        self.tmp_dir = root / "tmp"
        self.content_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.tmp_dir.iterdir():  # torn downloads of an earlier run
            leftover.unlink(missing_ok=True)
        self._content = os.fspath(self.content_dir)
        self._dirs: set[str] = set()  # shard directories made
        self._size = 0  # (updated from the event loop and the eviction thread)
        self._added_in_walk = 0  # bytes added since the eviction walk under way began
        self._counting = threading.Lock()
        self._dropping = threading.Lock()  # guards the two below
        self._to_drop: list[str] = []  # superseded entries' files, to delete
        self._dropper = False  # a thread deleting them is under way
        self._evicting = threading.Lock()  # held by the one eviction walk at a time
        self._walker: threading.Thread | None = None
        self._growth_check = max(min(GROWTH_CHECK, self._disk_room()[1] // 4), 1 << 20)
        self.evict()  # (counts what an earlier run left, and keeps it within the limit)

    def _file(self, name: str) -> str:
        return f"{self._content}/{name[:2]}/{name}"

    def cached_path(self, path: str, version: str) -> Path:
        return Path(self._file(content_key(path, version)))

    def lookup(self, path: str, version: str) -> str | None:
        """The entry's file, now the most recently used; None when not cached. (A use
        is written to the disk only when the last was `touch_after` seconds ago: a
        touch costs an inode update, a stat does not, and each open asks.)"""
        file = self._file(content_key(path, version))
        try:
            st = os.stat(file)
        except FileNotFoundError:
            return None
        if time.time_ns() - st.st_ctime_ns > self._touch_after_ns:
            try:
                os.utime(file)
            except OSError as e:  # (a use not recorded must not fail the read)
                log.debug("content cache: %s not touched: %r", file, e)
        return file

    def has(self, path: str, version: str) -> bool:
        """Whether (path, version) is cached, without counting it as a use."""
        return os.path.exists(self._file(content_key(path, version)))

    def _shard(self, name: str, *, again: bool = False) -> None:
        """Make the entry's shard directory, unless made already (`again`: it was,
        and has been removed by hand since)."""
        shard = name[:2]
        if again:
            self._dirs.discard(shard)
        if shard not in self._dirs:
            os.makedirs(f"{self._content}/{shard}", exist_ok=True)
            self._dirs.add(shard)

    def _move_in(self, src: str | Path, name: str) -> int:
        """Rename `src` to the entry's file (FileNotFoundError when `src` is gone); the
        size of the entry it replaced (0: none)."""
        dest = self._file(name)
        self._shard(name)
        replaced = _size_of(dest)
        try:
            os.replace(src, dest)
        except FileNotFoundError:
            if not os.path.exists(src):
                raise
            self._shard(name, again=True)
            os.replace(src, dest)
        return replaced

    def temp_path(self) -> Path:
        """A new name for a download, in a directory that exists: made again when the
        cache was removed behind the mount's back (someone clearing ~/.cache). Entries
        gone that way are misses, fetched again; their shard directories come back as
        they are needed (`_shard`)."""
        if not os.path.isdir(self.tmp_dir):
            self.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.tmp_dir / uuid.uuid4().hex

    def commit(self, tmp: Path, path: str, version: str) -> Path | None:
        """Move a complete file into the cache as (path, version). None (and `tmp` left
        where it is) when it lives on another filesystem: a copy is not worth a stall;
        the next read fetches it; None too when `tmp` is gone (the cache directory was
        emptied meanwhile: its reader holds a descriptor of it)."""
        name = content_key(path, version)
        try:
            size = os.stat(tmp).st_size
            replaced = self._move_in(tmp, name)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.EXDEV:
                return None
            raise
        self._added(size - replaced, keep=name)
        return Path(self._file(name))

    def link_in(self, src: Path, path: str, version: str) -> Path | None:
        """`commit` for a file that stays where it is too (a hard link); None when it
        cannot be linked (another filesystem, or links refused): the next read fetches.
        A complete file linked straight into place is as atomic as a rename: two
        syscalls per file, where a flush lands thousands at once."""
        name = content_key(path, version)
        dest = self._file(name)
        self._shard(name)
        try:
            os.link(src, dest)
        except FileExistsError:
            # The same content saved again (a file rewritten unchanged): the entry
            # there has it already. Replacing it freed the old file's blocks on the
            # event loop, 0.2-0.4 ms per save on ext4; one of another size (changed
            # by hand) is replaced, as commit does.
            if _size_of(dest) == _size_of(str(src)):
                return Path(dest)
            return self._link_via_temp(src, path, version)
        except FileNotFoundError:
            if not src.exists():
                return None
            self._shard(name, again=True)  # (its shard, removed by hand meanwhile)
            return self._link_via_temp(src, path, version)
        except OSError as e:
            if e.errno in LINK_REFUSED:
                return None
            raise
        self._added(os.stat(dest).st_size, keep=name)
        return Path(dest)

    def _link_via_temp(self, src: Path, path: str, version: str) -> Path | None:
        tmp = self.temp_path()
        try:
            os.link(src, tmp)
        except OSError as e:
            if e.errno in LINK_REFUSED:
                return None
            raise
        try:
            return self.commit(tmp, path, version)
        finally:
            tmp.unlink(missing_ok=True)  # (when commit left it)

    def rename(self, src: str, dst: str, version: str, new_version: str) -> None:
        """A rename landed: the entry of (src, version) is (dst, new_version) now."""
        old = self._file(content_key(src, version))
        try:
            replaced = self._move_in(old, content_key(dst, new_version))
        except FileNotFoundError:  # (not cached, or removed by hand)
            return
        with self._counting:
            self._size -= replaced

    def drop(self, path: str, version: str) -> None:
        """(path, version) is superseded: its entry goes (a file saved again and again,
        a database's WAL, kept every version until the cache was full). In a worker
        thread: freeing its blocks took 0.2 to 0.4 ms on ext4, in the bookkeeping of
        every save. (Should the same version be cached again before the thread runs,
        the next read fetches it.)"""
        with self._dropping:
            self._to_drop.append(self._file(content_key(path, version)))
            if self._dropper:
                return  # (the thread under way takes it)
            self._dropper = True
        try:
            trio.lowlevel.start_thread_soon(self._drop_all, _ignored)
        except RuntimeError as e:  # (no thread to be had: the eviction walk frees them)
            with self._dropping:
                self._dropper = False
            log.warning("content cache: superseded entries not deleted: %r", e)

    def _drop_all(self) -> None:
        """One thread at a time deletes what is dropped (a landed batch of thousands
        of saves must not start a thread for each)."""
        while True:
            with self._dropping:
                if not self._to_drop:
                    self._dropper = False
                    return
                files, self._to_drop = self._to_drop, []
            for file in files:
                try:
                    self._delete(file)
                except OSError as e:  # (left to the eviction walk)
                    log.debug("content cache: %s not deleted: %r", file, e)

    def _delete(self, file: str) -> None:
        try:
            size = os.stat(file).st_size
            os.unlink(file)
        except FileNotFoundError:  # (not cached)
            return
        with self._counting:
            self._size -= size

    def _added(self, size: int, keep: str) -> None:
        with self._counting:
            self._size += size
            self._added_in_walk += max(size, 0)  # (what a replaced entry frees: not here)
        if self._size > self.limit or self._disk_filling(max(size, 0)):
            self._start_walk(keep)

    def growing(self, n: int) -> None:
        """A download in progress wrote `n` more bytes: make room before the disk is
        full, not after (a 1 GiB file can fill it before its entry is added)."""
        if self._disk_filling(n):
            self._start_walk("")

    def _disk_filling(self, n: int) -> bool:
        """`n` more bytes came: whether the disk is past its free share, asked once
        every `_growth_check` bytes (not once per entry: a tree read adds thousands)."""
        self._grown += n
        if self._grown < self._growth_check:
            return False
        self._grown = 0
        return self._disk_short()

    def _start_walk(self, keep: str) -> None:
        """An eviction walk of every entry, in a thread of its own, off the event loop
        (none when one is under way)."""
        if not self._evicting.acquire(blocking=False):
            return
        self._walker = threading.Thread(
            target=self._evict_then_release, args=(keep,), name="cache-evict", daemon=True
        )
        try:
            self._walker.start()
        except RuntimeError as e:  # (no thread to be had: the next entry tries again)
            self._evicting.release()
            log.warning("content cache: eviction not started: %r", e)

    def _disk_room(self) -> tuple[int, int]:
        """(bytes free on the cache's disk, bytes to keep free there)."""
        try:
            st = os.statvfs(self._content)
        except OSError:  # (unknown: not short)
            return 1, 0
        return st.f_bavail * st.f_frsize, int(st.f_blocks * st.f_frsize * MIN_FREE_SHARE)

    def _disk_short(self) -> bool:
        free, keep_free = self._disk_room()
        return free < keep_free

    def _evict_then_release(self, keep: str) -> None:
        try:
            self._walk(keep)
        except OSError as e:  # (the cache's disk): the next entry added tries again
            log.warning("content cache: eviction failed: %r", e)
        finally:
            self._evicting.release()

    def evict(self) -> None:
        """Count the entries' bytes and drop the least recently used until the cache is
        within 90% of its limit (after any walk already under way)."""
        with self._evicting:
            self._walk(None)

    def wait_evicted(self, timeout: float | None = None) -> None:
        """Until the eviction walk under way (if any) is done."""
        walker = self._walker
        if walker is not None:
            walker.join(timeout)

    def _walk(self, keep: str | None) -> None:
        """The eviction walk (`keep`: the name of an entry just added, left). An entry's
        last use is its inode's change time: a rename into the cache, a link and a
        lookup's touch all set it (ties, in the kernel's coarse clock, go by the
        modification time); one used after the walk began is left too."""
        began = time.time_ns()
        with self._counting:
            self._added_in_walk = 0
        found = []
        total = 0
        for shard in _entries(self._content):
            if not (shard.is_dir(follow_symlinks=False) and _SHARD.fullmatch(shard.name)):
                continue
            self._dirs.add(shard.name)
            for f in _entries(shard.path):
                if not (_ENTRY.fullmatch(f.name) and f.name[:2] == shard.name):
                    continue  # (not an entry)
                try:
                    st = f.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                total += st.st_size
                if st.st_ctime_ns < began and f.name != keep:
                    found.append((st.st_ctime_ns, st.st_mtime_ns, f.name, st.st_size, st.st_ino))
        with self._counting:
            # Exact again, but for what came while it walked: counted twice where the
            # walk saw it too (too much, never too little: the next walk is only sooner).
            self._size = total + self._added_in_walk
        free, keep_free = self._disk_room()
        short = keep_free - free  # (> 0: the disk is fuller than it should be)
        if total <= self.limit and short <= 0:
            return
        target = self.limit * 0.9 if total > self.limit else total
        if short > 0:  # down to the free share, and room for downloads to go on
            target = min(target, total - short - max(keep_free // 10, 2 * self._growth_check))
        found.sort()
        for ctime, _, name, size, ino in found:
            if total <= target:
                break
            file = self._file(name)
            try:
                st = os.stat(file)
                if st.st_ino != ino or st.st_ctime_ns != ctime:
                    continue  # used or replaced since the walk saw it: kept
                os.unlink(file)
            except FileNotFoundError:
                pass  # (gone meanwhile: no longer kept either)
            total -= size
            with self._counting:
                self._size -= size

    def usage(self) -> int:
        """Bytes of content kept (counted, not walked: status asks often)."""
        return self._size


def _size_of(file: str) -> int:
    try:
        return os.stat(file).st_size
    except FileNotFoundError:
        return 0


def _entries(directory: str) -> list[os.DirEntry[str]]:
    """A directory's entries; none when it is gone (removed behind the mount's back:
    the walk counts what is there)."""
    try:
        with os.scandir(directory) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _ignored(result: outcome.Outcome[object]) -> None:
    """A superseded entry's deletion: one that failed leaves an entry the eviction walk
    removes in its turn."""
