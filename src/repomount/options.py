"""Every mount option in one place: its value type, its default, how it is written.

The command line (`repomount mount --flush-delay 1`), the config file (`flush-delay = 1`
in a `[remote.NAME]` table), the mount helper (`-o flush_delay=1`) and the mount itself
all read their values and defaults from here: `Options` holds the values (its field
defaults are THE defaults), `SPECS` says how each one is parsed from text and described.

Importing this loads nothing else of repomount, so `repomount serve` (and `--help`) load
no client code: no vfs, no FUSE, no trio.
"""

from __future__ import annotations

import enum
import grp
import pwd
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


class Policy(enum.Enum):
    """What a mount does when a change it sends finds the remote changed (--on-conflict)."""

    KEEP_BOTH = "keep-both"  # local content goes up next to the file; the remote's stays
    FAIL = "fail"  # keep the change pending; fsync reports ESTALE
    MINE = "mine"  # overwrite the remote
    THEIRS = "theirs"  # take the remote; the local copy is kept in the state dir


# How long stopping a mount (SIGTERM, `repomount unmount`) waits for pending uploads;
# what is left stays in the journal for the next mount.
DEFAULT_DRAIN_TIMEOUT = 60.0

# Names that stay on local disk: vim swap and test files, backups, emacs and
# LibreOffice lock files.
DEFAULT_LOCAL_ONLY = (".*.sw?", "*~", ".#*", "#*#", "4913", ".~lock.*#")


# How long a remote may take (docs/semantics.md, "Failures"); `repomount mount` options.
CONNECT_TIMEOUT = 10.0  # seconds to open a connection
ANSWER_TIMEOUT = 60.0  # seconds from a request sent to the first byte of its answer
READ_TIMEOUT = 30.0  # seconds of silence in the middle of an answer (or of a request)
MIN_RATE = 32 << 10  # bytes/s: an answer of n bytes may take READ_TIMEOUT + n / MIN_RATE

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Options:
    """A mount's options. Each field is one option of `SPECS`, named like its flag."""

    endpoint: str | None = None  # a hosted service's API base URL
    dist: str | None = None  # sentry: the files of this dist of the release
    cache_dir: Path | None = None  # None: $XDG_CACHE_HOME/repomount
    cache_size: int = 10 << 30
    state_dir: Path | None = None  # None: $XDG_STATE_HOME/repomount
    metadata_ttl: float = 5.0
    flush_delay: float = 0.5
    max_flush_window: float = 5.0
    transfers: int = 4
    read_ahead: int = 1 << 20  # the kernel's read-ahead on this mount; 0: its default
    on_conflict: Policy = Policy.KEEP_BOTH
    poll_interval: float = 10.0
    no_change_feed: bool = False
    local_only: tuple[str, ...] = DEFAULT_LOCAL_ONLY
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    trust_remote_code: bool = False
    follow_remote_symlinks: bool = False
    connect_timeout: float = CONNECT_TIMEOUT
    answer_timeout: float = ANSWER_TIMEOUT
    read_timeout: float = READ_TIMEOUT
    min_rate: int = MIN_RATE
    uid: int | None = None  # owner shown for files; None: the mounting user
    gid: int | None = None
    log_level: str = "INFO"
    fuse_options: tuple[str, ...] = field(default=())  # -o, passed to FUSE

    def updated(self, values: dict[str, Any]) -> Options:
        return replace(self, **values)


DEFAULTS = Options()


# --------------------------------------------------------------------------- parsing text


def parse_size(text: str) -> int:
    """`10G`, `512M`, `32K`, `1024`: a positive number of bytes."""
    value = _size(text)
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return value


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        return int(float(num) * units[unit])
    except (ValueError, OverflowError):
        raise ValueError(f"not a size: {text!r}") from None


MAX_SECONDS = 1e9  # any wait or interval longer than this is a typo


def _seconds(text: str, *, zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    low_ok = value >= 0 if zero else value > 0
    if not low_ok or value == float("inf"):
        what = "0 or a positive" if zero else "a positive"
        raise ValueError(f"must be {what} number of seconds: {text!r}")
    if value > MAX_SECONDS:  # a socket's or select's timeout past this overflows
        raise ValueError(f"must be at most {MAX_SECONDS:.0f} seconds (31 years): {text!r}")
    return value


def parse_seconds(text: str) -> float:
    return _seconds(text, zero=False)


def parse_delay(text: str) -> float:
    """Seconds where 0 means "at once" (a flush delay, a listing TTL, a drain)."""
    return _seconds(text, zero=True)


def _read_ahead(text: str) -> int:
    """A read-ahead window: 0 (the kernel's default), or 4K (a page) to 1G."""
    value = _size(text)
    if value == 0:
        return 0
    if not 4 << 10 <= value <= 1 << 30:
        raise ValueError(f"must be 0 (the kernel's default) or from 4K to 1G: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise ValueError(f"must be at least 1: {text!r}")
    return value


def _policy(text: str) -> Policy:
    try:
        return Policy(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not one of {', '.join(p.value for p in Policy)}") from None


def _log_level(text: str) -> str:
    if text.strip().upper() not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.strip().upper()


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split(",") if w.strip())


def _path(text: str) -> Path:
    if not text.strip():
        raise ValueError("an empty path")
    return Path(text).expanduser()


def _text(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError("must not be empty")
    return text


def _url(text: str) -> str:
    if not text.strip():
        raise ValueError("an empty URL")
    return text.strip()


def _uid(text: str) -> int:
    return _id(text, lambda name: pwd.getpwnam(name).pw_uid, "user")


def _gid(text: str) -> int:
    return _id(text, lambda name: grp.getgrnam(name).gr_gid, "group")


ID_LIMIT = (1 << 32) - 1  # the first uid or gid a file cannot show


def _id(text: str, lookup: Callable[[str], int], what: str) -> int:
    text = text.strip()
    if text.isdigit():
        # uid_t is 32 bits and (uid_t)-1 means "no owner": FUSE could show neither
        if int(text) >= ID_LIMIT:
            raise ValueError(f"no {what} {text!r}: ids go from 0 to {ID_LIMIT - 1}")
        return int(text)
    try:
        return lookup(text)
    except KeyError:
        raise ValueError(f"no {what} {text!r}") from None


def _flag(text: str) -> bool:
    """A flag's text value, for the mount helper's `-o flag=yes` and the like."""
    lowered = text.strip().lower()
    if lowered in ("", "1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a yes or a no")


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Spec:
    """How one option is written: `--NAME VALUE` on the command line, `NAME = VALUE` in
    the config file, `-o NAME=VALUE` (or with `_`) for the mount helper."""

    field: str  # the Options attribute
    parse: Callable[[str], Any]  # text -> value; ValueError with a one-line message
    help: str  # "(default ...)" is added from Options
    metavar: str | None = None  # None: a flag, on when given
    short: str | None = None
    listed: bool = False  # a list: comma-separated text, or a TOML array
    shown: str | None = None  # how the default reads, when not its value

    @property
    def name(self) -> str:
        return self.field.replace("_", "-")

    @property
    def is_flag(self) -> bool:
        return self.metavar is None

    def default(self) -> Any:
        return getattr(DEFAULTS, self.field)

    def show(self, value: Any) -> str:
        """A value as the user writes it."""
        if isinstance(value, Policy):
            return value.value
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, tuple):
            return ",".join(value)
        if isinstance(value, float):
            return f"{value:g}"
        if value is None:
            return ""
        if self.parse in (parse_size, _read_ahead):
            return _show_size(value)
        return str(value)

    def shown_default(self) -> str:
        return self.shown if self.shown is not None else self.show(self.default())

    def from_text(self, text: str) -> Any:
        if self.is_flag:
            return _flag(text)
        return self.parse(text)

    def from_config(self, value: object) -> Any:
        """A value as TOML gives it: a flag is a boolean; a list an array or a string;
        numbers and sizes a number or a string."""
        if self.is_flag:
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if isinstance(value, bool):
            raise ValueError("must be a value, not true or false")
        if self.listed and isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ValueError("must be an array of strings")
            return self.parse(",".join(value))
        if isinstance(value, str | int | float):
            return self.parse(str(value))
        raise ValueError(f"must be a string or a number, not a {type(value).__name__}")


def _show_size(n: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


SPECS: tuple[Spec, ...] = (
    Spec("endpoint", _url, "API base URL of a hosted service (relace:, terminaluse:, "
         "oxen:, sentry:), e.g. a test server", "URL", shown="the service's"),
    Spec("dist", _text, "sentry: the files of this dist of the release", "NAME",
         shown="those without one"),
    Spec("fuse_options", _words, "FUSE mount options, e.g. allow_other", "OPT[,OPT...]",
         short="-o", listed=True, shown="none"),
    Spec("metadata_ttl", parse_delay, "how long a directory listing is trusted", "S"),
    Spec("cache_dir", _path, "content cache", "D", shown="$XDG_CACHE_HOME/repomount"),
    Spec("cache_size", parse_size, "fetched content kept on disk, least recently used "
         "dropped first", "SIZE"),
    Spec("state_dir", _path, "state: the journal of pending changes, conflict copies, "
         "logs", "D", shown="$XDG_STATE_HOME/repomount"),
    Spec("flush_delay", parse_delay, "send changes after this much quiet, batched", "S"),
    Spec("max_flush_window", parse_delay, "...but at most this long after the first "
         "pending change", "S"),
    Spec("transfers", _count, "parallel uploads where the remote has no batch commit", "N"),
    Spec("read_ahead", _read_ahead, "how far ahead the kernel reads a file being read "
         "in order (set where the mount may write sysfs, i.e. as root; 0: the kernel's "
         "default, 128K)", "SIZE"),
    Spec("on_conflict", _policy, "when the remote changed under a local change",
         "{" + ",".join(p.value for p in Policy) + "}"),
    Spec("poll_interval", parse_seconds, "how often to look for remote changes without a "
         "change feed", "S"),
    Spec("no_change_feed", _flag, "poll even where the remote has a change feed (e.g. "
         "behind a proxy)"),
    Spec("local_only", _words, "names that stay on local disk, never uploaded", "GLOB,...",
         listed=True),
    Spec("drain_timeout", parse_delay, "how long a stopping mount (SIGTERM, unmount) "
         "waits for pending uploads; what is left stays in the journal for the next mount",
         "S"),
    Spec("trust_remote_code", _flag, "show git metadata (.git) from the remote as yours, "
         "so git honours its config and hooks; only for repos whose every writer you trust"),
    Spec("follow_remote_symlinks", _flag, "follow links from the remote that point outside "
         "the mount; off, they show as read-only files holding the target"),
    Spec("connect_timeout", parse_seconds, "to open a connection to the remote", "S"),
    Spec("answer_timeout", parse_seconds, "from a request sent to the first byte of its "
         "answer", "S"),
    Spec("read_timeout", parse_seconds, "longest silence in the middle of an answer", "S"),
    Spec("min_rate", parse_size, "bytes per second an answer must average: one of N bytes "
         "may take --read-timeout + N / this", "SIZE"),
    Spec("uid", _uid, "the owner files show (a uid or a user name)", "USER",
         shown="the mounting user"),
    Spec("gid", _gid, "the group files show (a gid or a group name)", "GROUP",
         shown="the mounting user's group"),
    Spec("log_level", _log_level, "how much the mount log (STATE_DIR/.../mount.log; "
         "stderr with -f; the journal under systemd) says", "{" + ",".join(LOG_LEVELS) + "}"),
)  # fmt: skip

BY_NAME: dict[str, Spec] = {s.name: s for s in SPECS}


def spec_for(key: str) -> Spec | None:
    """The option a key names: `flush-delay` or `flush_delay`."""
    return BY_NAME.get(key.strip().replace("_", "-"))
