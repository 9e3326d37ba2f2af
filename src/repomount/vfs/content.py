"""The on-disk content cache: fetched (or uploaded) content keyed by (path, version).

Files on disk, not bytes in RAM: an entry is a complete file, written to a temp name and
renamed into place, so a crash never leaves a torn entry.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import uuid
from pathlib import Path

# Why a hard link into the cache may fail where a later read can fetch instead.
LINK_REFUSED = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOENT)
_ENTRY = re.compile(r"[0-9a-f]{64}")


def content_key(path: str, version: str) -> str:
    """The entry's file name."""
    return _digest(path, version).hex()


def _digest(path: str, version: str) -> bytes:
    """The entry's key in the index (its name's 32 bytes: half a hex string's memory)."""
    return hashlib.sha256(f"{path}\0{version}".encode()).digest()


class ContentCache:
    """`limit` bounds the bytes kept; the least recently used entries go first (an entry
    open elsewhere stays readable through its descriptor after it is dropped).

    An in-memory index (entry -> size, in least-recently-used order) answers lookups and
    eviction; the disk is walked once, at start, to rebuild it (by modification time).
    It is keyed by the entries' digests, not Paths (a Path costs five times the memory,
    and a walk of a large repo caches a hundred thousand entries)."""

    def __init__(self, root: Path, limit: int = 10 << 30) -> None:
        self.root = root
        self.limit = limit
        self.content_dir = root / "content"
        self.tmp_dir = root / "tmp"
        self.content_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for leftover in self.tmp_dir.iterdir():  # torn downloads of an earlier run
            leftover.unlink(missing_ok=True)
        self._content = os.fspath(self.content_dir)
        found = []
        for f in self.content_dir.glob("*/*"):
            st = f.stat()
            if _ENTRY.fullmatch(f.name) and f.name[:2] == f.parent.name:  # (else: no entry)
                found.append((st.st_mtime, bytes.fromhex(f.name), st.st_size))
        # (a plain dict in insertion order: an OrderedDict's links cost 50 bytes an entry)
        self._lru: dict[bytes, int] = {k: size for _, k, size in sorted(found)}
        self._size = sum(self._lru.values())
        self._dirs: set[str] = {k[:1].hex() for k in self._lru}  # shard directories made

    def _file(self, key: bytes) -> str:
        name = key.hex()
        return f"{self._content}/{name[:2]}/{name}"

    def cached_path(self, path: str, version: str) -> Path:
        return Path(self._file(_digest(path, version)))

    def lookup(self, path: str, version: str) -> Path | None:
        key = _digest(path, version)
        if key not in self._lru:
            return None
        self._lru[key] = self._lru.pop(key)  # (now the most recently used)
        return Path(self._file(key))

    def has(self, path: str, version: str) -> bool:
        """Whether (path, version) is cached, without counting it as a use."""
        return _digest(path, version) in self._lru

    def _shard(self, key: bytes, *, again: bool = False) -> None:
        """Make the entry's shard directory, unless made already (`again`: it was,
        and has been removed by hand since)."""
        shard = key[:1].hex()
        if again:
            self._dirs.discard(shard)
        if shard not in self._dirs:
            os.makedirs(f"{self._content}/{shard}", exist_ok=True)
            self._dirs.add(shard)

    def _move_in(self, src: str | Path, key: bytes) -> None:
        """Rename `src` to the entry's file (FileNotFoundError when `src` is gone)."""
        self._shard(key)
        try:
            os.replace(src, self._file(key))
        except FileNotFoundError:
            if not os.path.exists(src):
                raise
            self._shard(key, again=True)
            os.replace(src, self._file(key))

    def temp_path(self) -> Path:
        return self.tmp_dir / uuid.uuid4().hex

    def commit(self, tmp: Path, path: str, version: str) -> Path | None:
        """Move a complete file into the cache as (path, version). None (and `tmp` left
        where it is) when it lives on another filesystem: a copy is not worth a stall;
        the next read fetches it."""
        key = _digest(path, version)
        dest = self._file(key)
        try:
            self._move_in(tmp, key)
        except OSError as e:
            if e.errno == errno.EXDEV:
                return None
            raise
        size = os.stat(dest).st_size
        self._size += size - self._lru.pop(key, 0)
        self._lru[key] = size
        if self._size > self.limit:
            self.evict(keep=key)
        return Path(dest)

    def link_in(self, src: Path, path: str, version: str) -> Path | None:
        """`commit` for a file that stays where it is too (a hard link); None when it
        cannot be linked (another filesystem, or links refused): the next read fetches.
        A complete file linked straight into place is as atomic as a rename: two
        syscalls per file, where a flush lands thousands at once."""
        key = _digest(path, version)
        if key in self._lru:  # (an entry there already: replaced, as commit does)
            return self._link_via_temp(src, path, version)
        dest = self._file(key)
        self._shard(key)
        try:
            os.link(src, dest)
        except FileExistsError:  # (a file the index does not know: replaced)
            return self._link_via_temp(src, path, version)
        except FileNotFoundError:
            if not src.exists():
                return None
            self._shard(key, again=True)  # (its shard, removed by hand meanwhile)
            return self._link_via_temp(src, path, version)
        except OSError as e:
            if e.errno in LINK_REFUSED:
                return None
            raise
        size = os.stat(dest).st_size
        self._size += size
        self._lru[key] = size
        if self._size > self.limit:
            self.evict(keep=key)
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
        old = _digest(src, version)
        if old not in self._lru:
            return
        new = _digest(dst, new_version)
        try:
            self._move_in(self._file(old), new)
        except FileNotFoundError:  # (gone: removed by hand)
            self._size -= self._lru.pop(old)
            return
        self._size -= self._lru.pop(new, 0)
        self._lru[new] = self._lru.pop(old)

    def evict(self, keep: bytes | None = None) -> None:
        """Drop least recently used entries until the cache is within 90% of its limit
        (`keep`: the key of one to leave, just added)."""
        for key in list(self._lru):
            if self._size <= self.limit * 0.9:
                break
            if key == keep:
                continue
            self._size -= self._lru.pop(key)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file(key))

    def usage(self) -> int:
        """Bytes of content kept (tracked, not walked: status asks often)."""
        return self._size
