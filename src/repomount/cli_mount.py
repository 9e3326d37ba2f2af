"""`repomount mount`: what to mount, with which options, then the mount itself.

Options come from options.DEFAULTS, then a named remote's table in the config file
(`repomount mount work: MNT`), then the command line: each wins over the one before.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repomount import cli_options, configfile
from repomount.cli_control import fail
from repomount.options import DEFAULTS, Options
from repomount.printable import printable

FROM_FILE = "config file"
FROM_COMMAND_LINE = "command line"


@dataclass(frozen=True)
class Resolved:
    """A mount's source, mountpoint, token and options, and where each option came from."""

    src: str
    mountpoint: Path | None
    options: Options
    token: str | None = field(default=None, repr=False)  # None: from the environment
    name: str | None = None  # the named remote's, if one
    origins: dict[str, str] = field(default_factory=dict)  # Options field -> FROM_*


def resolve(
    src: str, mountpoint: Path | None, args: argparse.Namespace, config_path: Path | None
) -> Resolved:
    """SRC (a source, or `NAME:` for a remote of the config file) and the command line's
    options -> what a mount uses. Raises configfile.ConfigError (one line)."""
    given = cli_options.given_options(args)
    origins = dict.fromkeys(given, FROM_COMMAND_LINE)
    name = configfile.remote_name(src)
    if name is None:
        return Resolved(src.strip(), mountpoint, DEFAULTS.updated(given), origins=origins)
    remote = configfile.load(config_path).remote(name)
    from_file: dict[str, Any] = remote.options
    origins = {**dict.fromkeys(from_file, FROM_FILE), **origins}
    return Resolved(
        remote.src,
        mountpoint if mountpoint is not None else remote.mountpoint,
        DEFAULTS.updated({**from_file, **given}),
        token=remote.token,
        name=name,
        origins=origins,
    )


def cmd_mount(args: argparse.Namespace) -> int:
    from repomount import daemon
    from repomount.mounting import (
        MountRequest,
        dirs_problem,
        lock_state_dir,
        prepare_local_dirs,
        run_mount,
        state_dir_busy,
    )
    from repomount.private import NotPrivateError
    from repomount.remotes.registry import open_remote

    try:
        r = resolve(args.src, args.mountpoint, args, args.config)
    except configfile.ConfigError as e:
        return fail(str(e), 2)
    if r.mountpoint is None:
        where = f'mountpoint = "..." in [remote.{r.name}]' if r.name else "a named remote"
        return fail(f"where to mount? give MNT, or {where}", 2)
    mountpoint = r.mountpoint.absolute()
    why = daemon.check_mountpoint(mountpoint)
    if why:
        return fail(why, 2)
    try:
        identity = open_remote(r.src, token=r.token, endpoint=r.options.endpoint).identity
    except ValueError as e:
        return fail(str(e), 2)
    req = MountRequest.create(r.src, mountpoint, identity, r.options, token=r.token)
    if why := dirs_problem(req):
        return fail(why, 2)
    req.note_new_dirs()
    try:
        prepare_local_dirs(req)  # here, before daemonizing: the log goes in the state dir
    except NotPrivateError as e:
        return fail(str(e), 2)
    except OSError as e:  # (a missing XDG_RUNTIME_DIR, a read-only --state-dir, ...)
        return fail(f"cannot make the mount's directories: {_os_error(e)}", 2)
    # Asked here too, before the daemon's log (that of the mount using it) is written.
    held = lock_state_dir(req)
    if held is None:
        return fail(state_dir_busy(req), 1)
    os.close(held)
    if args.foreground:
        return run_mount(req, _print_ready(r.src, mountpoint))
    req.log_file = req.state_dir / "mount.log"
    code = daemon.start(lambda ready: run_mount(req, ready), req.log_file)
    if code == 0:
        print(printable(f"mounted {r.src} on {mountpoint} (log: {req.log_file})"))
    return code


def _os_error(e: OSError) -> str:
    where = f"{e.filename}: " if e.filename else ""
    said = f"{where}{e.strerror or e}"
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and e.filename and str(e.filename).startswith(base) and not os.path.isdir(base):
        said += f" (XDG_RUNTIME_DIR={base} does not exist: create it, mode 700, or unset it)"
    return said


def _print_ready(src: str, mountpoint: Path) -> Callable[[str | None], None]:
    def ready(error: str | None) -> None:
        if error is None:
            print(
                printable(f"repomount: mounted {src} on {mountpoint}"), file=sys.stderr, flush=True
            )
        else:
            print(f"repomount: {printable(error)}", file=sys.stderr, flush=True)

    return ready
