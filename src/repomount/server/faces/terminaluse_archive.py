"""Terminal Use filesystem archives: tar.zst in, tar.zst out, and the sync's commit.

The format is the one the `terminaluse` SDK writes and reads: a tar of regular files
with relative names, compressed as a single zstd frame (SDK: `pyzstd.compress(tar,
level 1)`). zstd is why the `zstandard` package is a server dependency: Python 3.11 has
no zstd codec, and uploads compressed by the SDK need a real decoder.

Everything here blocks (disk, database, compression): callers run it in worker threads.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from repomount import tarwrite
from repomount.paths import InvalidPathError, ancestors_of, shown, validate_path
from repomount.server.names import control_character_problem, is_unicode
from repomount.server.store import Delete, Entry, Operation, Store, Write
from repomount.tarread import DIRECTORY, FileTarReader, Member, TarError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 256 << 10
PAGE = 5000


class BadArchive(ValueError):
    """An uploaded archive that is not a tar.zst of regular files with valid paths."""


class UnwritableName(BadArchive):
    """A member whose name is not valid UTF-8 or holds a control character."""


class TooManyFiles(BadArchive):
    """More members than one commit takes (MAX_FILES)."""


MAX_FILES = 100_000  # as a native commit's operations
# What an archive may unpack to in all: this, plus this many times its own size. A
# filesystem's files compress a few times over; a few KiB of zeros unpack to a GiB each.
UNPACKED_FLOOR = 256 << 20
UNPACKED_RATIO = 50


class TooLargeUnpacked(BadArchive):
    """The archive unpacks to more than it may (`unpacked_limit`)."""


def unpacked_limit(archive_size: int) -> int:
    return UNPACKED_FLOOR + UNPACKED_RATIO * archive_size


@dataclass(frozen=True)
class ArchiveFile:
    path: str
    sha256: str  # the blob holding its content (already in the store)
    size: int


# --- reading the store ---------------------------------------------------------------


def walk(
    store: Store, repo: str, path: str = "", *, recursive: bool = True, at: int | None = None
) -> tuple[int, list[Entry]]:
    """The entries below directory `path` (all, or only its children) at one head,
    sorted by path, and that head. NotFound when `path` is not a directory."""
    entries: list[Entry] = []
    after: str | None = None
    while True:
        page = store.list_tree(repo, path, recursive=recursive, at=at, after=after, limit=PAGE)
        at = page.head
        entries.extend(page.entries)
        if not page.more or not page.entries:
            return page.head, entries
        after = page.entries[-1].path


# --- tar.zst out ---------------------------------------------------------------------


def archive_chunks(store: Store, repo: str, head: int) -> Generator[bytes, None, None]:
    """The files of `repo` at `head` as a tar.zst, chunk by chunk (nothing held whole)."""
    compressor = zstandard.ZstdCompressor(level=1).compressobj()
    _, entries = walk(store, repo, at=head)
    for entry in entries:
        if entry.type != "file" or entry.version is None:
            continue
        out = compressor.compress(
            tarwrite.member_header(entry.path, entry.size, mtime=entry.mtime, mode=entry.mode)
        )
        if out:
            yield out
        with store.open_blob(entry.version) as blob:
            remaining = entry.size
            while remaining > 0:
                chunk = blob.read(min(CHUNK, remaining))
                if not chunk:
                    raise RuntimeError(f"blob {entry.version} is shorter than recorded")
                remaining -= len(chunk)
                if out := compressor.compress(chunk):
                    yield out
        if out := compressor.compress(tarwrite.padding(entry.size)):
            yield out
    yield compressor.compress(tarwrite.END_OF_ARCHIVE) + compressor.flush()


# --- tar.zst in ----------------------------------------------------------------------


def member_path(name: str) -> str:
    """A tar member name as a repository path ("./a/b" and "/a/b" are "a/b")."""
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    if not is_unicode(name):  # names that are not UTF-8 are read with surrogates
        raise UnwritableName(f"archive member {shown(name)}: the name is not valid UTF-8")
    if problem := control_character_problem(name):
        raise UnwritableName(f"archive member {shown(name)}: the name {problem}")
    try:
        return validate_path(name)
    except InvalidPathError as error:
        raise BadArchive(f"archive member {error}") from None


def unpack(store: Store, archive: BinaryIO, max_file_size: int) -> list[ArchiveFile]:
    """Store each regular file of a tar.zst as a blob; the files, in archive order (a
    later member of the same name wins, as when extracting). Read with tarread, which
    refuses a member's pax and GNU long-name headers past tarread.MAX_PAX before it
    reads them (stdlib tarfile reads them whole, whatever size they declare)."""
    if archive.read(4) != ZSTD_MAGIC:
        raise BadArchive("not a zstd stream (an archive must be tar.zst)")
    limit = unpacked_limit(archive.seek(0, 2))
    archive.seek(0)
    unpacked = 0
    files: dict[str, ArchiveFile] = {}
    stream = zstandard.ZstdDecompressor().stream_reader(archive, read_across_frames=True)
    tar = FileTarReader(stream, CHUNK)
    try:
        while (member := tar.next()) is not None:
            if _is_directory(member):
                continue  # directories are implicit in file paths
            if not member.is_file:
                raise BadArchive(f"archive member {shown(member.name)} is not a regular file")
            if member.size > max_file_size:
                raise BadArchive(f"archive member {shown(member.name)} is larger than the limit")
            unpacked += member.size
            if unpacked > limit:
                raise TooLargeUnpacked(
                    f"the archive unpacks to over {limit} bytes"
                    f" ({UNPACKED_RATIO} times its size and {UNPACKED_FLOOR >> 20} MiB)"
                )
            path = member_path(member.name)
            if len(files) >= MAX_FILES and path not in files:
                raise TooManyFiles(f"the archive holds more than {MAX_FILES} files")
            sha256, size = _store_blob(store, tar)
            files.pop(path, None)  # keep archive order for the last of equal names
            files[path] = ArchiveFile(path, sha256, size)
    except (TarError, zstandard.ZstdError) as error:
        raise BadArchive(f"cannot read the archive: {error}") from None
    dirs = {d for path in files for d in ancestors_of(path)}
    if clash := sorted(dirs & files.keys()):
        raise BadArchive(f"archive holds {shown(clash[0])} both as a file and as a directory")
    return list(files.values())


def _is_directory(member: Member) -> bool:
    # (pre-POSIX tars mark a directory by a trailing '/' on a regular member's name)
    return member.type == DIRECTORY or (member.type == b"\0" and member.name.endswith("/"))


def _store_blob(store: Store, tar: FileTarReader) -> tuple[str, int]:
    """The current member's content as a blob."""
    spool = store.new_spool()
    try:
        while chunk := tar.read(CHUNK):
            spool.write(chunk)
        store.add_blob(spool)
    except BaseException:
        store.discard_spool(spool)
        raise
    return spool.sha256, spool.size


# --- the sync's commit ---------------------------------------------------------------


def sync_operations(current: list[Entry], files: list[ArchiveFile]) -> list[Operation]:
    """What turns the repository's `current` entries into exactly the archive's files:
    deletes first (files, then directories no archive file lives under), so that a file
    may replace a directory and the reverse, then the writes. The caller commits them
    with `base` = the head `current` was read at."""
    wanted = {f.path: f for f in files}
    keep_dirs = {d for f in files for d in ancestors_of(f.path)}
    deletes: list[Operation] = []
    dirs: list[str] = []
    for entry in current:
        if entry.type == "dir":
            if entry.path not in keep_dirs:
                dirs.append(entry.path)
        elif entry.path not in wanted:
            deletes.append(Delete(entry.path))
    # Emptied directories go after their files, the deepest first.
    deletes += [Delete(d) for d in sorted(dirs, key=lambda d: d.count("/"), reverse=True)]
    versions = {e.path: e.version for e in current if e.type == "file"}
    writes: list[Operation] = [
        Write(f.path, f.sha256) for f in files if versions.get(f.path) != f.sha256
    ]
    return deletes + writes
