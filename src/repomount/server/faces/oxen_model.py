"""Oxen's names, ids and hashes over the store: pure functions, no I/O.

- A repository `NS/NAME` is a store repository: `NAME` itself in the namespace every
  store repository appears in (`repomount`), else `NS.NAME` marked with the namespace.
- A branch other than `main` is a store repository of its own (`branch_store`), made by
  copying the tree of the commit it starts from; `main` is the repository itself.
- A commit id names (store repository, head): 16 hex digits of the head scrambled per
  store repository, 16 checking it belongs there (no table needed). A branch moved to a
  commit (or made from one) shows that commit's id at the head where its tree became
  that commit's (`Alias`).
- A file's `hash` is the xxh3-128 of its bytes as Oxen writes it (`{:x}`: lowercase hex
  without zero padding).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
from dataclasses import dataclass
from typing import Any

import xxhash

from repomount.paths import shown
from repomount.server.faces.seqtokens import SeqTokens

DEFAULT_NS = "repomount"
DEFAULT_BRANCH = "main"
OXEN_VERSION = "0.54.0"  # what the face says it is (the server version the reference read)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_STORE_NAME = 100

# repository attributes of the face (store repo_attrs)
NAMESPACE = "oxen.namespace"  # on a repository outside the default namespace
BRANCHES = "oxen.branches"  # JSON {branch name: store name}, branches other than main
ROOT = "oxen.root"  # "1": main has an empty first commit at head 0
ALIAS = "oxen.alias"  # JSON {"seq": n, "commit": id}: head n shows commit `id`
BRANCH_OF = "oxen.branch_of"  # on a branch's store repository: its repository


class OxenError(Exception):
    """A refusal as Oxen words it: status code, `status_message` type, title, detail."""

    def __init__(self, status: int, kind: str, title: str, detail: str = "") -> None:
        super().__init__(title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail or title


def not_found(title: str, detail: str = "") -> OxenError:
    return OxenError(404, "resource_not_found", title, detail)


def bad_request(title: str, detail: str = "") -> OxenError:
    return OxenError(400, "bad_request", title, detail)


# --------------------------------------------------------------------------- names


def check_name(name: str, what: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise bad_request(
            f"Invalid {what} name: {shown(name)}",
            f"a {what} name starts with a letter or digit, then letters, digits, '_', '.', '-'",
        )
    return name


def store_name(namespace: str, name: str) -> str:
    """The store repository of `NS/NAME` (which may not exist)."""
    return name if namespace == DEFAULT_NS else f"{namespace}.{name}"


def branch_store(repo_store: str, branch: str) -> str:
    """The store repository holding branch `branch` of `repo_store` (not main)."""
    tag = hashlib.sha256(f"{repo_store}\0{branch}".encode()).hexdigest()[:16]
    return f"{repo_store[: MAX_STORE_NAME - 21]}.oxb-{tag}"


def check_branch_name(name: str) -> str:
    """Branch names may hold '/', not empty segments, '..', spaces or control bytes."""
    parts = name.split("/")
    if (
        not name
        or len(name) > 200
        or any(not p or p in (".", "..") or p.startswith(".") for p in parts)
        or re.search(r"[\s\x00-\x1f~^:?*\[\\]", name)
    ):
        raise bad_request(f"Invalid branch name: {shown(name)}")
    return name


# --------------------------------------------------------------------------- commit ids

_COMMITS = SeqTokens(b"oxen-commit", check_bytes=8)


def commit_id(store: str, seq: int) -> str:
    """A commit id of 32 hex digits, derived from the store's head number so that no
    table is needed (server/faces/seqtokens.py)."""
    return _COMMITS.token(store, seq)


def seq_of(store: str, cid: str) -> int | None:
    """The head of `store` that commit id `cid` names, or None when it names none."""
    return _COMMITS.seq(store, cid)


@dataclass(frozen=True)
class Alias:
    seq: int  # the head of the store repository ...
    commit: str  # ... that shows this commit's id

    def dump(self) -> str:
        return json.dumps({"seq": self.seq, "commit": self.commit})

    @staticmethod
    def load(attrs: dict[str, str]) -> Alias | None:
        raw = attrs.get(ALIAS)
        if raw is None:
            return None
        data = json.loads(raw)
        return Alias(int(data["seq"]), str(data["commit"]))


def load_branches(attrs: dict[str, str]) -> dict[str, str]:
    raw = attrs.get(BRANCHES)
    return {} if raw is None else {str(k): str(v) for k, v in json.loads(raw).items()}


# --------------------------------------------------------------------------- authors


def author_field(name: str, email: str) -> str:
    """A store commit's author: "name <email>"."""
    return f"{name} <{email}>" if email else name


def split_author(author: str) -> tuple[str, str]:
    match = re.fullmatch(r"(.*) <([^<>]*)>", author)
    return (match.group(1), match.group(2)) if match else (author, "")


# --------------------------------------------------------------------------- hashes


def xxh3_hex(data: bytes) -> str:
    return format(xxhash.xxh3_128_intdigest(data), "x")


def dir_hash(commit: str, path: str) -> str:
    """A directory's hash: it changes with every commit (the face keeps no merkle tree)."""
    return xxh3_hex(f"dir\0{commit}\0{path}".encode())


# --------------------------------------------------------------------------- file types

_TABULAR = {"csv", "tsv", "parquet", "arrow", "jsonl", "ndjson"}


def file_type(path: str) -> tuple[str, str, str]:
    """(data_type, mime_type, extension) of a file, guessed from its name."""
    name = path.rsplit("/", 1)[-1]
    extension = name.rsplit(".", 1)[-1].lower() if "." in name.lstrip(".") else ""
    mime = mimetypes.guess_type(name, strict=False)[0] or (
        "text/plain" if extension in ("md", "txt", "py", "toml", "yaml", "yml") else ""
    )
    mime = mime or "application/octet-stream"
    if extension in _TABULAR:
        kind = "tabular"
    elif mime.startswith(("image/", "video/", "audio/")):
        kind = mime.split("/", 1)[0]
    elif mime.startswith("text/") or mime in ("application/json", "application/xml"):
        kind = "text"
    else:
        kind = "binary"
    return kind, mime, extension


def json_object(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise bad_request("Invalid request body", "expected a JSON object")
    return raw
