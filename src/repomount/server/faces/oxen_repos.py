"""Oxen repositories, branches and commits over the store (blocking: run in threads).

oxen_model.py says how names, ids and branches map onto store repositories; this
module reads and changes them. A `Ref` is one commit: (store repository, head).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import xxhash

from repomount.paths import parent_of
from repomount.server.faces.oxen_model import (
    ALIAS,
    BRANCH_OF,
    BRANCHES,
    DEFAULT_BRANCH,
    DEFAULT_NS,
    NAMESPACE,
    ROOT,
    Alias,
    OxenError,
    bad_request,
    branch_store,
    commit_id,
    load_branches,
    not_found,
    seq_of,
    split_author,
    store_name,
    xxh3_hex,
)
from repomount.server.faces.oxen_wire import Commit, Node
from repomount.server.store import (
    Delete,
    Entry,
    Gone,
    InvalidRequest,
    Mkdir,
    NotFound,
    Operation,
    RepoExists,
    Store,
    Symlink,
    Write,
)

PAGE = 10_000
HASHES_KEPT = 200_000
CHUNK = 1 << 20


@dataclass(frozen=True)
class Ref:
    store: str
    seq: int


class Repos:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._hashes: OrderedDict[str, str] = OrderedDict()  # sha256 -> xxh3
        self._hash_lock = threading.Lock()

    # ------------------------------------------------------------------ repositories

    def find(self, ns: str, name: str) -> str:
        """The store repository of `ns/name`; 404 when there is none."""
        repo = store_name(ns, name)
        try:
            attrs = self.store.repo_attrs(repo)
        except (NotFound, InvalidRequest):
            raise not_found(f"Repository not found: {ns}/{name}") from None
        if attrs.get(NAMESPACE, DEFAULT_NS) != ns or BRANCH_OF in attrs:
            raise not_found(f"Repository not found: {ns}/{name}")
        return repo

    def create(self, ns: str, name: str) -> str:
        repo = store_name(ns, name)
        try:
            self.store.create_repo(repo)
        except RepoExists:
            raise OxenError(409, "resource_already_exists", "Repo already exists.") from None
        except InvalidRequest as e:
            raise bad_request("Invalid repository name", e.message) from None
        if ns != DEFAULT_NS:
            self.store.set_repo_attrs(repo, {NAMESPACE: ns})
        return repo

    def delete(self, repo: str) -> None:
        for branch, store in self.branches(repo).items():
            if branch != DEFAULT_BRANCH:
                try:
                    self.store.delete_repo(store)
                except NotFound:
                    pass
        self.store.delete_repo(repo)

    def names_in(self, ns: str) -> list[str]:
        found = []
        for info in self.store.list_repos():
            try:
                attrs = self.store.repo_attrs(info.name)
            except NotFound:
                continue
            if BRANCH_OF in attrs or attrs.get(NAMESPACE, DEFAULT_NS) != ns:
                continue
            found.append(info.name if ns == DEFAULT_NS else info.name[len(ns) + 1 :])
        return found

    def is_empty(self, repo: str) -> bool:
        return DEFAULT_BRANCH not in self.branches(repo)

    # ------------------------------------------------------------------ branches

    def branches(self, repo: str) -> dict[str, str]:
        """Branch name -> store repository, main first when it exists."""
        attrs = self.store.repo_attrs(repo)
        found: dict[str, str] = {}
        if self.store.head(repo) > 0 or ROOT in attrs or ALIAS in attrs:
            found[DEFAULT_BRANCH] = repo
        found.update(sorted(load_branches(attrs).items()))
        return found

    def branch(self, repo: str, name: str) -> Ref:
        store = self.branches(repo).get(name)
        if store is None:
            raise not_found(f"Branch not found: {name}", f"no branch {name!r}")
        return Ref(store, self.store.head(store))

    def make_root(self, repo: str) -> Ref:
        """main's empty first commit, in a repository with none."""
        self.store.set_repo_attrs(repo, {ROOT: "1"})
        return Ref(repo, self.store.head(repo))

    def create_branch(self, repo: str, name: str, start: Ref) -> Ref:
        store = branch_store(repo, name)
        self.store.create_repo(store)
        self.store.set_repo_attrs(store, {BRANCH_OF: repo})
        try:
            ops = self._ops_to(store, {}, self.tree(start))
            if ops:
                self.store.commit(store, ops, message=f"branch {name}", author="repomount")
            head = self.store.head(store)
            self.store.set_repo_attrs(store, {ALIAS: Alias(head, self.commit_id(start)).dump()})
            branches = load_branches(self.store.repo_attrs(repo))
            branches[name] = store
            self.store.set_repo_attrs(repo, {BRANCHES: _dump(branches)})
        except BaseException:
            self.store.delete_repo(store)
            raise
        return Ref(store, head)

    def move_branch(self, repo: str, name: str, target: Ref) -> Ref:
        """Make the branch's tree the target commit's; the branch then shows its id."""
        current = self.branch(repo, name)
        ops = self._ops_to(current.store, self.tree(current), self.tree(target))
        if ops:
            message = f"move branch {name}"
            result = self.store.commit(
                current.store, ops, message=message, author="repomount", base=current.seq
            )
            current = Ref(current.store, result.head)
        alias = Alias(current.seq, self.commit_id(target))
        self.store.set_repo_attrs(current.store, {ALIAS: alias.dump()})
        return current

    def delete_branch(self, repo: str, name: str) -> None:
        if name == DEFAULT_BRANCH:
            raise bad_request(f"Cannot delete the default branch {name!r}")
        branches = load_branches(self.store.repo_attrs(repo))
        store = branches.pop(name, None)
        if store is None:
            raise not_found(f"Branch not found: {name}")
        self.store.set_repo_attrs(repo, {BRANCHES: _dump(branches)})
        self.store.delete_repo(store)

    def _ops_to(self, store: str, old: dict[str, Entry], new: dict[str, Entry]) -> list[Operation]:
        """Operations that turn tree `old` of `store` into tree `new`."""
        ops: list[Operation] = []
        for path in sorted(set(old) - set(new), reverse=True):  # deepest first
            ops.append(Delete(path))
        for path, e in sorted(new.items()):
            before = old.get(path)
            if before is not None and (before.type, before.version) == (e.type, e.version):
                continue
            if before is not None and before.type != e.type:
                ops.append(Delete(path))  # (what was below an old directory went above)
            if e.type == "file" and e.version is not None:
                ops.append(Write(path, e.version, mode=e.mode))
            elif e.type == "symlink" and e.target is not None:
                ops.append(Symlink(path, e.target))
            elif e.type == "dir" and (before is None or before.type != "dir"):
                ops.append(Mkdir(path))
        return ops

    # ------------------------------------------------------------------ commits

    def alias(self, store: str) -> Alias | None:
        return Alias.load(self.store.repo_attrs(store))

    def commit_id(self, ref: Ref) -> str:
        alias = self.alias(ref.store)
        if alias is not None and alias.seq == ref.seq:
            return alias.commit
        return commit_id(ref.store, ref.seq)

    def find_commit(self, repo: str, cid: str) -> Ref | None:
        """The commit `cid` of `repo` (on any of its branches), or None."""
        stores = list(dict.fromkeys([repo, *self.branches(repo).values()]))
        for store in stores:
            seq = seq_of(store, cid)
            if seq is not None and self._has_commit(store, seq):
                return Ref(store, seq)
        for store in stores:
            alias = self.alias(store)
            if alias is not None and alias.commit == cid.lower():
                return Ref(store, alias.seq)
        return None

    def _has_commit(self, store: str, seq: int) -> bool:
        try:
            head = self.store.head(store)
        except NotFound:
            return False
        if seq == 0:
            attrs = self.store.repo_attrs(store)
            return ROOT in attrs or (Alias.load(attrs) or Alias(-1, "")).seq == 0
        return seq <= head

    def commit(self, ref: Ref) -> Commit:
        alias = self.alias(ref.store)
        if alias is not None and alias.seq == ref.seq:
            origin = self._origin(ref.store, alias.commit)
            if origin is not None and origin != ref:
                return self.commit(origin)
        cid = self.commit_id(ref)
        parents = [] if (parent := self._parent(ref, alias)) is None else [self.commit_id(parent)]
        if ref.seq == 0:
            created = self.store.repo_info(ref.store).created_at
            return Commit(cid, parents, "Initialized Repo", "repomount", "", _iso_seconds(created))
        try:
            log = self.store.commit_log(ref.store, ref.seq, 1)
        except Gone:
            log = []
        if not log or log[0].seq != ref.seq:
            return Commit(cid, parents, "", "", "", 0.0)
        info = log[0]
        author, email = split_author(info.author)
        return Commit(cid, parents, info.message, author, email, info.time)

    def _origin(self, store: str, cid: str) -> Ref | None:
        """Where commit `cid` (an alias of `store`) was made."""
        branch_of = self.store.repo_attrs(store).get(BRANCH_OF, store)
        try:
            for candidate in [branch_of, *self.branches(branch_of).values()]:
                seq = seq_of(candidate, cid)
                if seq is not None and self._has_commit(candidate, seq):
                    return Ref(candidate, seq)
        except NotFound:
            return None
        return None

    def _parent(self, ref: Ref, alias: Alias | None) -> Ref | None:
        if alias is not None and alias.seq == ref.seq:
            origin = self._origin(ref.store, alias.commit)
            return None if origin is None else self._parent(origin, self.alias(origin.store))
        if ref.seq == 0:
            return None
        below = Ref(ref.store, ref.seq - 1)
        if alias is not None and alias.seq == below.seq:
            return below
        if below.seq == 0 and not self._has_commit(ref.store, 0):
            return None
        if alias is not None and below.seq < alias.seq:
            return None
        return below

    def history(self, ref: Ref) -> list[Commit]:
        """The commits of `ref`'s history, newest first (while the store keeps them)."""
        found: list[Commit] = []
        seen: set[str] = set()
        floors: dict[str, int] = {}
        at: Ref | None = ref
        while at is not None:
            if at.store not in floors:
                log = self.store.commit_log(at.store, None, 1 << 30)
                floors[at.store] = log[-1].seq if log else 0
            if at.seq < floors[at.store]:
                break  # older than the kept history
            commit = self.commit(at)
            if commit.id in seen:
                break
            seen.add(commit.id)
            found.append(commit)
            at = self._parent(at, self.alias(at.store))
        return found

    # ------------------------------------------------------------------ trees

    def tree(self, ref: Ref, path: str = "") -> dict[str, Entry]:
        """Every entry below `path` at `ref`."""
        entries: dict[str, Entry] = {}
        after = None
        while True:
            listing = self.store.list_tree(
                ref.store, path, recursive=True, at=ref.seq, after=after, limit=PAGE
            )
            entries.update((e.path, e) for e in listing.entries)
            if not listing.more or not listing.entries:
                return entries
            after = listing.entries[-1].path

    def entry(self, ref: Ref, path: str) -> Entry | None:
        if not path:
            return Entry("", "dir", 0, None, 0, 0o755)
        _, found = self.store.stat(ref.store, path, at=ref.seq)
        return found

    def nodes(self, ref: Ref, path: str, depth: int) -> list[Node]:
        """The children of directory `path` (sorted by name), with their children down to
        `depth` more levels (-1: all); sizes of directories are the bytes below them."""
        entries = self.tree(ref, path)
        sizes: dict[str, int] = {}
        for e in entries.values():
            if e.type != "dir":
                d = parent_of(e.path)
                while d != path and d:
                    sizes[d] = sizes.get(d, 0) + e.size
                    d = parent_of(d)
        children: dict[str, list[str]] = {}
        for p in sorted(entries):
            children.setdefault(parent_of(p), []).append(p)
        hashes = self.hashes(
            [e.version for e in entries.values() if e.type == "file" and e.version]
        )

        def build(p: str, level: int) -> Node:
            e = entries[p]
            if e.type == "dir":
                below = None
                if depth < 0 or level < depth:
                    below = [build(c, level + 1) for c in children.get(p, [])]
                return Node(p, True, sizes.get(p, 0), None, below)
            version = e.version or ""
            return Node(p, False, e.size, hashes.get(version, xxh3_hex(b"")), None)

        return [build(p, 0) for p in children.get(path, [])]

    def dir_size(self, ref: Ref, path: str) -> int:
        return sum(e.size for e in self.tree(ref, path).values() if e.type != "dir")

    # ------------------------------------------------------------------ hashes

    def hashes(self, versions: Sequence[str]) -> dict[str, str]:
        """The xxh3 of each blob (by its SHA-256), computed once and remembered."""
        out: dict[str, str] = {}
        for version in versions:
            with self._hash_lock:
                known = self._hashes.get(version)
            if known is None:
                known = self._hash_blob(version)
                self.remember(version, known)
            out[version] = known
        return out

    def remember(self, sha256: str, xxh3: str) -> None:
        with self._hash_lock:
            self._hashes[sha256] = xxh3
            self._hashes.move_to_end(sha256)
            while len(self._hashes) > HASHES_KEPT:
                self._hashes.popitem(last=False)

    def _hash_blob(self, sha256: str) -> str:
        h = xxhash.xxh3_128()
        with self.store.open_blob(sha256) as blob:
            while chunk := blob.read(CHUNK):
                h.update(chunk)
        return format(h.intdigest(), "x")


def _dump(branches: dict[str, str]) -> str:
    return json.dumps(branches, sort_keys=True)


def _iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
