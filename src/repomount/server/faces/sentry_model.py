"""Sentry releases and their files over the shared store (synchronous: the face runs
these in worker threads, one at a time per face).

- A release is a store repository: named by its version when that is a repository
  name, else `sentry-<hash of the version>`; every repository is thus a release (of
  every organization and project, unless the face created it for some projects).
- The files of a release without a dist are that repository's files; those of a dist
  live in a repository of their own (`sentry-<hash>`), named in the release's
  attributes. A file's name is its path (sentrynames.path_of_name).
- What Sentry knows of a file and the store does not (its id, SHA-1, headers, upload
  time) is kept in the attributes of the repository holding it, per path, with the
  SHA-256 it describes: content changed through another face makes a new file (a new
  id), as a delete and upload would on Sentry.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from repomount.paths import ancestors_of, parent_of
from repomount.server.faces.sentry_wire import EXISTS, ReleaseFile, SentryError, not_found
from repomount.server.sqlite_store import REPO_NAME_RE
from repomount.server.store import (
    ABSENT,
    PRESENT,
    Conflict,
    Delete,
    Entry,
    NotFound,
    Operation,
    PathConflict,
    RepoExists,
    Store,
    Write,
)
from repomount.server.store import Rename as StoreRename

VERSION = "sentry.version"  # of a release whose repository is named by a hash
PROJECTS = "sentry.projects"  # JSON list; absent: every project
CREATED = "sentry.created"  # seconds since the epoch
NEXT_ID = "sentry.next_id"
DIST = "sentry.dist:"  # + dist name -> the repository of that dist's files
DIST_OF = "sentry.dist_of"  # on a dist's repository: its release's
FILE = "sentry.file:"  # + path -> JSON {id, sha256, sha1, headers, created}
PAGE = 5000
HASH_CHUNK = 1 << 20

_lock = threading.Lock()  # the face's metadata changes, one at a time


@dataclass
class Release:
    repo: str
    version: str
    created: float
    projects: list[str] | None  # None: every project
    dists: dict[str, str] = field(default_factory=dict)  # dist -> repository

    def linked(self, project: str | None) -> bool:
        return project is None or self.projects is None or project in self.projects

    def sources(self) -> list[tuple[str | None, str]]:
        """(dist, repository) of each set of files, the files without a dist first."""
        return [(None, self.repo), *sorted(self.dists.items())]


def locked(fn: Any) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return fn(*args, **kwargs)

    return run


def _hashed(*parts: str) -> str:
    return "sentry-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]


def repo_of_version(version: str) -> str:
    return version if REPO_NAME_RE.fullmatch(version) else _hashed(version)


# --------------------------------------------------------------------------- releases


def find_release(store: Store, version: str) -> Release | None:
    repo = repo_of_version(version)
    try:
        attrs = store.repo_attrs(repo)
        info = store.repo_info(repo)
    except NotFound:
        return None
    if DIST_OF in attrs or attrs.get(VERSION, version) != version:
        return None  # a dist's repository, or a hash's namesake
    if repo != version and VERSION not in attrs:
        return None
    projects = json.loads(attrs[PROJECTS]) if PROJECTS in attrs else None
    created = float(attrs.get(CREATED) or _epoch(info.created_at))
    dists = {k[len(DIST) :]: v for k, v in attrs.items() if k.startswith(DIST)}
    return Release(repo, version, created, projects, dists)


@locked
def create_release(store: Store, version: str, projects: list[str]) -> tuple[Release, bool]:
    """The release, and whether this created it or linked a project to it."""
    found = find_release(store, version)
    if found is None:
        repo = repo_of_version(version)
        try:
            store.create_repo(repo)
        except RepoExists:
            raise SentryError(409, f"Release {version} cannot be stored here") from None
        attrs = {VERSION: version, PROJECTS: json.dumps(sorted(set(projects)))}
        store.set_repo_attrs(repo, attrs | {CREATED: repr(time.time())})
        found = find_release(store, version)
        assert found is not None
        return found, True
    if found.projects is None or set(projects) <= set(found.projects):
        return found, False
    linked = sorted({*found.projects, *projects})
    store.set_repo_attrs(found.repo, {PROJECTS: json.dumps(linked)})
    return replace(found, projects=linked), True


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- files


@locked
def release_files(store: Store, release: Release) -> list[ReleaseFile]:
    """Every file of the release, all dists, ordered by name (then dist); files new to
    this face get their id and SHA-1 now."""
    found: list[ReleaseFile] = []
    ids = _Ids(store, release)
    for dist, repo in release.sources():
        try:
            found += _files_of(store, repo, dist, ids)
        except NotFound:
            continue  # a dist's repository deleted through another face
    ids.save()
    return sorted(found, key=lambda f: (f.name, f.dist or ""))


def find_file(store: Store, release: Release, file_id: str) -> ReleaseFile:
    """The file with this id now, or 404 (an id that is not a number names none)."""
    if not file_id.isdigit():
        raise not_found()
    for f in release_files(store, release):
        if f.id == int(file_id):
            return f
    raise not_found()


def _files_of(store: Store, repo: str, dist: str | None, ids: _Ids) -> list[ReleaseFile]:
    entries = list(_walk(store, repo))
    metas = {k[len(FILE) :]: v for k, v in store.repo_attrs(repo).items() if k.startswith(FILE)}
    gone = metas.keys() - {e.path for e in entries}
    changes: dict[str, str | None] = {FILE + p: None for p in gone}
    files = []
    for e in entries:
        assert e.version is not None
        meta = json.loads(metas[e.path]) if e.path in metas else None
        if meta is None or meta.get("sha256") != e.version:
            meta = {
                "id": ids.next(),
                "sha256": e.version,
                "sha1": _sha1_of(store, e.version),
                "headers": {},
                "created": e.mtime,
            }
            changes[FILE + e.path] = json.dumps(meta)
        files.append(_file(repo, dist, e.path, e.size, meta))
    if changes:
        store.set_repo_attrs(repo, changes)
    return files


def _walk(store: Store, repo: str) -> Iterator[Entry]:
    """The repository's files (not its directories or symlinks)."""
    after = None
    while True:
        listing = store.list_tree(repo, "", recursive=True, at=None, after=after, limit=PAGE)
        for e in listing.entries:
            if e.type == "file" and e.version is not None:
                yield e
        if not listing.more or not listing.entries:
            return
        after = listing.entries[-1].path


def _file(repo: str, dist: str | None, path: str, size: int, meta: dict[str, Any]) -> ReleaseFile:
    return ReleaseFile(
        id=int(meta["id"]),
        path=path,
        dist=dist,
        repo=repo,
        sha256=meta["sha256"],
        sha1=meta["sha1"],
        size=size,
        headers=meta.get("headers") or {},
        created=float(meta["created"]),
    )


def _sha1_of(store: Store, blob: str) -> str:
    digest = hashlib.sha1()
    with store.open_blob(blob) as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Ids:
    """Ids of a release's files: numbers counted per release, from a start of its own
    (an id of one release names nothing in another)."""

    def __init__(self, store: Store, release: Release) -> None:
        self.store = store
        self.repo = release.repo
        start = int(hashlib.sha256(release.repo.encode()).hexdigest()[:6], 16) * 10**6 + 1
        self.value = int(store.repo_attrs(release.repo).get(NEXT_ID) or start)
        self.first = self.value

    def next(self) -> int:
        self.value += 1
        return self.value - 1

    def save(self) -> None:
        if self.value != self.first:
            self.store.set_repo_attrs(self.repo, {NEXT_ID: str(self.value)})


# --------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class Upload:
    path: str
    dist: str | None
    blob: str  # SHA-256 of the content, already in the store
    sha1: str
    size: int
    headers: dict[str, str]


@locked
def add_file(store: Store, release: Release, upload: Upload) -> ReleaseFile:
    """Store a new file; 409 where its name (and dist) is taken."""
    repo = release.repo if upload.dist is None else _dist_repo(store, release, upload.dist)
    try:
        store.commit(repo, [Write(upload.path, upload.blob, expect=ABSENT)], author="sentry")
    except Conflict:
        raise SentryError(409, EXISTS) from None
    except PathConflict as error:
        raise _path_conflict(upload.path, error) from None
    ids = _Ids(store, release)
    meta = {
        "id": ids.next(),
        "sha256": upload.blob,
        "sha1": upload.sha1,
        "headers": upload.headers,
        "created": time.time(),
    }
    ids.save()
    store.set_repo_attrs(repo, {FILE + upload.path: json.dumps(meta)})
    return _file(repo, upload.dist, upload.path, upload.size, meta)


def _dist_repo(store: Store, release: Release, dist: str) -> str:
    if dist in release.dists:
        return release.dists[dist]
    repo = _hashed(release.repo, dist)
    try:
        store.create_repo(repo)
    except RepoExists:
        pass  # made before its release's attribute was written
    store.set_repo_attrs(repo, {DIST_OF: release.repo})
    store.set_repo_attrs(release.repo, {DIST + dist: repo})
    release.dists[dist] = repo
    return repo


@locked
def delete_file(store: Store, f: ReleaseFile) -> None:
    """Delete the file (exactly the content its id names: else 404)."""
    ops: list[Operation] = [Delete(f.path, expect=f.sha256)]
    ops += [Delete(d, expect=PRESENT) for d in _emptied(store, f.repo, f.path, keep="")]
    try:
        store.commit(f.repo, ops, author="sentry")
    except (Conflict, NotFound):
        raise not_found() from None
    store.set_repo_attrs(f.repo, {FILE + f.path: None})


@locked
def rename_file(store: Store, f: ReleaseFile, path: str) -> ReleaseFile:
    """Give the file another name (same id, dist, content and headers)."""
    if path == f.path:
        return f
    ops: list[Operation] = [StoreRename(f.path, path, expect=f.sha256, expect_to=ABSENT)]
    ops += [Delete(d, expect=PRESENT) for d in _emptied(store, f.repo, f.path, keep=path)]
    try:
        store.commit(f.repo, ops, author="sentry")
    except Conflict as error:
        if any(c.path == f.path for c in error.conflicts):
            raise not_found() from None  # changed meanwhile: the id names nothing now
        raise SentryError(409, EXISTS) from None
    except PathConflict as error:
        raise _path_conflict(path, error) from None
    meta = store.repo_attrs(f.repo).get(FILE + f.path)
    store.set_repo_attrs(f.repo, {FILE + f.path: None, FILE + path: meta})
    return replace(f, path=path)


@locked
def delete_all(store: Store, release: Release) -> None:
    """Every file of the release, all dists (and the directories they leave empty)."""
    for _, repo in release.sources():
        try:
            entries = _all_entries(store, repo)
        except NotFound:
            continue
        files = [e for e in entries if e.type == "file"]
        kept = {a for e in entries if e.type == "symlink" for a in ancestors_of(e.path)}
        dirs = [e.path for e in entries if e.type == "dir" and e.path not in kept]
        ops: list[Operation] = [Delete(e.path, expect=e.version) for e in files]
        ops += [Delete(d, expect=PRESENT) for d in sorted(dirs, key=lambda p: -p.count("/"))]
        if ops:
            store.commit(repo, ops, author="sentry")
        metas = [k for k in store.repo_attrs(repo) if k.startswith(FILE)]
        store.set_repo_attrs(repo, dict.fromkeys(metas))


def _all_entries(store: Store, repo: str) -> list[Entry]:
    found: list[Entry] = []
    after = None
    while True:
        listing = store.list_tree(repo, "", recursive=True, at=None, after=after, limit=PAGE)
        found += listing.entries
        if not listing.more or not listing.entries:
            return found
        after = listing.entries[-1].path


def _emptied(store: Store, repo: str, path: str, *, keep: str) -> list[str]:
    """The directories above `path` that nothing but it holds, deepest first (not those
    above `keep`, where a rename puts it): they go with it, as Sentry has no
    directories, only names."""
    staying = set(ancestors_of(keep)) if keep else set()
    gone: list[str] = []
    removed = path
    directory = parent_of(path)
    while directory and directory not in staying:
        listing = store.list_tree(repo, directory, recursive=False, at=None, after=None, limit=2)
        if any(e.path != removed for e in listing.entries):
            break
        gone.append(directory)
        removed, directory = directory, parent_of(directory)
    return gone


def _path_conflict(path: str, error: PathConflict) -> SentryError:
    return SentryError(
        400,
        f"File name {path!r} cannot be stored by this server: a file and a directory "
        f"would share a name ({error.message})",
    )
