"""The config file: named remotes, each with its source, token and mount options.

`$XDG_CONFIG_HOME/repomount/config.toml` (~/.config/repomount/config.toml), or the file
`--config PATH` names:

    [remote.work]
    src = "relace:6f1c0e52-..."     # what `repomount mount SRC` takes
    token = "..."                   # else the service's environment variable
    mountpoint = "~/work"           # for `repomount mount work:` without MNT, and systemd
    on-conflict = "fail"            # any mount option, named like its flag (- or _)
    cache-size = "2G"

It may hold tokens, so like ssh with a private key it is refused, with a one-line
message, when anyone but its owner may read or change it, or when it belongs to another
user (root's is accepted: root can read everything anyway).
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repomount.options import SPECS, spec_for
from repomount.private import shared_file_problem

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # also a systemd instance name
OWN_KEYS = ("src", "token", "mountpoint")  # a remote's keys that are no mount option
MAX_BYTES = 1 << 20


class ConfigError(Exception):
    """A config file that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class NamedRemote:
    name: str
    src: str
    token: str | None = field(repr=False)
    mountpoint: Path | None
    options: dict[str, Any]  # Options field -> value, checked


@dataclass(frozen=True)
class Config:
    path: Path
    exists: bool
    remotes: dict[str, NamedRemote]

    def remote(self, name: str) -> NamedRemote:
        if not self.exists:
            raise ConfigError(f"no remote {name!r}: there is no config file {self.path}")
        found = self.remotes.get(name)
        if found is None:
            has = ", ".join(sorted(self.remotes)) or "none"
            raise ConfigError(f"no [remote.{name}] in {self.path} (remotes there: {has})")
        return found


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME")
    return (Path(base) if base else Path.home() / ".config") / "repomount" / "config.toml"


def remote_name(src: str) -> str | None:
    """The name in `NAME:` (a named remote), else None (a source such as a URL)."""
    src = src.strip()
    if src.endswith(":") and NAME.fullmatch(src[:-1]):
        return src[:-1]
    return None


def load(path: Path | None = None) -> Config:
    """The config at `path`, or at the default place. A missing default file is an empty
    config; a missing `path`, one others may read or change, or a bad one, ConfigError."""
    explicit = path is not None
    where = path if path is not None else default_path()
    try:
        # O_NONBLOCK: a FIFO there is refused below instead of waiting for a writer.
        fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"no config file {where}") from None
        return Config(where, False, {})
    except OSError as e:
        raise ConfigError(f"cannot read the config file {where}: {e.strerror}") from None
    try:  # before fdopen, which answers a directory with a traceback (EISDIR)
        check_private(os.fstat(fd), where)
    except ConfigError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_BYTES >> 20} MiB: not a config file")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    return parse(text, where)


def check_private(st: os.stat_result, path: Path) -> None:
    """Refuse a config file others may read or change, or that another user owns."""
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"refusing the config file {path}: not a regular file")
    if st.st_uid not in (os.getuid(), 0):
        raise ConfigError(
            f"refusing the config file {path}: it belongs to uid {st.st_uid}, not to you"
        )
    problem = shared_file_problem(st.st_mode)
    if problem is not None:
        tokens = " and it may hold tokens" if st.st_mode & 0o044 else ""
        raise ConfigError(
            f"refusing the config file {path}: {problem}{tokens}; make it private: chmod 600 {path}"
        )


def parse(text: str, path: Path) -> Config:
    """A config's text (already checked private) -> Config, or ConfigError."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for key in doc:
        if key != "remote":
            raise ConfigError(f"{path}: unknown table or key {key!r} (expected [remote.NAME])")
    tables = doc.get("remote", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: 'remote' must be tables: [remote.NAME]")
    remotes = {}
    for name, table in tables.items():
        if not NAME.fullmatch(name):
            raise ConfigError(
                f"{path}: bad remote name {name!r}: letters, digits, '.', '_' and '-', "
                "starting with a letter or digit"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: remote.{name} must be a table: [remote.{name}]")
        remotes[name] = _remote(name, table, path)
    return Config(path, True, remotes)


def _remote(name: str, table: dict[str, Any], path: Path) -> NamedRemote:
    where = f"{path}: [remote.{name}]"
    src = table.get("src")
    if not isinstance(src, str) or not src.strip():
        raise ConfigError(f'{where}: needs src = "..." (what `repomount mount SRC` takes)')
    token = table.get("token")
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise ConfigError(f"{where}: token must be a non-empty string")
    mountpoint = table.get("mountpoint")
    if mountpoint is not None:
        if not isinstance(mountpoint, str) or not mountpoint.strip():
            raise ConfigError(f"{where}: mountpoint must be a path")
        mountpoint = Path(mountpoint).expanduser()
        if not mountpoint.is_absolute():
            raise ConfigError(f"{where}: mountpoint must be an absolute path (or start with ~)")
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key in OWN_KEYS:
            continue
        spec = spec_for(key)
        if spec is None:
            known = ", ".join([*OWN_KEYS, *(s.name for s in SPECS)])
            raise ConfigError(f"{where}: unknown key {key!r} (known: {known})")
        if spec.field in options:
            raise ConfigError(f"{where}: {spec.name} is given twice")
        try:
            options[spec.field] = spec.from_config(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {key}: {e}") from None
    return NamedRemote(name, src.strip(), token.strip() if token else None, mountpoint, options)
