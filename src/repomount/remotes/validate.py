"""What a remote may tell us about a file, checked where its answer enters.

Every adapter's wire module turns a listing's raw entries into `Entry`s through
`entries()`: an entry that cannot be parsed, or whose name, type, size, time, mode,
version or symlink target is one no filesystem could show, is skipped with one log
line naming it, and the rest of the listing is served. So is a name holding a control
character (repomount.paths): no mount makes one and repomount's server stores none, as
a newline or an escape sequence in a name garbles every listing a person reads. One
bad entry never blinds a whole directory, and nothing past this module needs to
distrust an `Entry`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

from repomount.paths import InvalidPathError, control_character_problem, validate_path
from repomount.printable import printable
from repomount.remotes.base import MAX_MTIME, MIN_MTIME, Entry

log = logging.getLogger(__name__)

T = TypeVar("T")

KINDS = frozenset({"file", "dir", "symlink"})
MAX_SIZE = 1 << 53  # bytes; beyond this a JSON number is no longer exact
MAX_TARGET_BYTES = 4096  # a symlink's target (Linux's PATH_MAX)
MAX_VERSION_CHARS = 1024  # a version token: a hash, a generation, an id
MAX_SHOWN = 120  # characters of a bad entry quoted in its log line

# What a parser of one raw entry raises when the entry is malformed.
MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError)


class BadEntry(ValueError):
    """An entry a remote sent that no filesystem could show; the message says why."""


def entries(raw: object, parse: Callable[[Any], Entry], *, source: str) -> list[Entry]:
    """The entries of a listing: each raw item parsed by `parse` and checked; an item
    that fails either is skipped with one warning naming it. `raw` itself must be a
    list (else the answer as a whole is malformed: TypeError)."""
    return each(raw, lambda item: checked(parse(item)), source=source)


def each(raw: object, parse: Callable[[Any], T], *, source: str) -> list[T]:
    """`parse` applied to every item of the list `raw`, skipping (with one warning) the
    items it refuses with a BadEntry or a malformation error."""
    if not isinstance(raw, list):
        raise TypeError(f"expected a list of entries, got {type(raw).__name__}")
    out: list[T] = []
    for item in raw:
        try:
            out.append(parse(item))
        except (BadEntry, *MALFORMED) as exc:
            log.warning("%s: skipping entry %s: %s", source, shown(item), reason(exc))
    return out


def checked(entry: Entry, *, target_known: bool = True) -> Entry:
    """`entry` if a filesystem can show it, else BadEntry. (The root, path "", is
    never an entry of a listing.) Without `target_known`, a symlink may still lack its
    target (a HEAD answer: only the content holds it)."""
    try:
        validate_path(entry.path)
    except InvalidPathError as exc:
        raise BadEntry(exc.reason) from None
    if problem := control_character_problem(entry.path):
        raise BadEntry(problem)
    if entry.kind not in KINDS:
        raise BadEntry(f"unknown type {entry.kind!r}")
    size(entry.size)
    if entry.mtime is not None:
        mtime(entry.mtime)
    if entry.mode is not None and not (_is_int(entry.mode) and 0 <= entry.mode <= 0o7777):
        raise BadEntry(f"mode {entry.mode!r} is not permission bits")
    if entry.version is not None:
        version(entry.version)
    if entry.kind == "symlink":
        if entry.target is not None or target_known:
            target(entry.target)
    elif entry.target is not None:
        raise BadEntry(f"a {entry.kind} with a symlink target")
    if entry.mode is not None and entry.mode & ~0o777:
        # setuid, setgid, sticky: never taken from a remote (`cp -a` out of the mount by
        # root would make a real setuid file of the remote's choosing)
        return dataclasses.replace(entry, mode=entry.mode & 0o777)
    return entry


# --------------------------------------------------------------------------- fields


def size(value: object) -> int:
    if not _is_int(value):
        raise BadEntry(f"size {_short(value)} is not a whole number")
    assert isinstance(value, int)
    if not 0 <= value <= MAX_SIZE:
        raise BadEntry(f"size {_short(value)} is out of range")
    return value


def mtime(value: object) -> float:
    if not (_is_int(value) or isinstance(value, float)):
        raise BadEntry(f"time {_short(value)} is not a number")
    assert isinstance(value, int | float)
    if not (math.isfinite(value) and MIN_MTIME <= value <= MAX_MTIME):
        raise BadEntry(f"time {_short(value)} is out of range")
    return float(value)


def mtime_ns(value: object) -> int:
    """A time in whole nanoseconds, in the range `mtime` allows."""
    if not _is_int(value):
        raise BadEntry(f"time {_short(value)} is not a whole number of nanoseconds")
    assert isinstance(value, int)
    if not MIN_MTIME <= value / 1e9 <= MAX_MTIME:
        raise BadEntry(f"time {_short(value)} is out of range")
    return value


def version(value: object) -> str:
    """A version token (or a head): a string, or a whole number taken as one."""
    if _is_int(value):
        value = str(value)  # (a huge one's digits are refused by str(): ValueError)
    if not isinstance(value, str):
        raise BadEntry(f"version {_short(value)} is not a string")
    if not value or len(value) > MAX_VERSION_CHARS or "\0" in value or not _utf8(value):
        raise BadEntry(f"version {_short(value)} is not a usable token")
    return value


def target(value: object) -> str:
    """A symlink's target: 1 to 4096 bytes of UTF-8, no NUL."""
    if not isinstance(value, str) or not value:
        raise BadEntry("a symlink without a target")
    if "\0" in value or not _utf8(value):
        raise BadEntry(f"symlink target {_short(value)} holds NUL or is not UTF-8")
    if len(value.encode()) > MAX_TARGET_BYTES:
        raise BadEntry(f"symlink target is longer than {MAX_TARGET_BYTES} bytes")
    return value


def number(value: object, what: str) -> float:
    """A JSON number (not a bool, not a string of digits)."""
    if not (_is_int(value) or isinstance(value, float)):
        raise BadEntry(f"{what} {_short(value)} is not a number")
    assert isinstance(value, int | float)
    return float(value)


def integer(value: object, what: str) -> int:
    """A JSON whole number (not a bool, not a string of digits)."""
    if not _is_int(value):
        raise BadEntry(f"{what} {_short(value)} is not a whole number")
    assert isinstance(value, int)
    return value


# --------------------------------------------------------------------------- messages


def shown(item: object) -> str:
    """How a log line names a raw entry: its path where it has one, bounded, on one line."""
    name = item.get("path", item.get("filename")) if isinstance(item, dict) else None
    return _short(name if isinstance(name, str) else item)


def reason(exc: BaseException) -> str:
    if isinstance(exc, BadEntry):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"no {_short(exc.args[0] if exc.args else '?')}"
    return _short(f"{type(exc).__name__}: {exc}", quote=False)


def _short(value: object, *, quote: bool = True) -> str:
    try:
        text = repr(value) if quote else str(value)
    except (RecursionError, ValueError):  # a deeply nested item; a huge int's digits
        text = f"<{type(value).__name__}>"
    text = printable(text)  # one line, and no escape sequence for a terminal
    return text if len(text) <= MAX_SHOWN else f"{text[: MAX_SHOWN - 3]}..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON can carry
        return False
    return True
