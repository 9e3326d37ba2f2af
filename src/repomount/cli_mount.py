"""`repomount mount`: what to mount, with which options, then the mount itself.

Options come from options.DEFAULTS, then the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from repomount import cli_options
from repomount.options import DEFAULTS, Options


def resolve(args: argparse.Namespace) -> Options:
    """The defaults, with the options the command line gave."""
    return DEFAULTS.updated(cli_options.given_options(args))


def fail(message: str, code: int = 1) -> int:
    print(f"repomount: {message}", file=sys.stderr)
    return code


def cmd_mount(args: argparse.Namespace) -> int:
    from repomount import daemon
    from repomount.mounting import MountRequest, prepare_local_dirs, run_mount
    from repomount.private import NotPrivateError
    from repomount.remotes.registry import open_remote

    src, options = args.src, resolve(args)
    mountpoint = args.mountpoint.absolute()
    why = daemon.check_mountpoint(mountpoint)
    if why:
        return fail(why, 2)
    try:
        identity = open_remote(src, endpoint=options.endpoint).identity
    except ValueError as e:
        return fail(str(e), 2)
    req = MountRequest.create(src, mountpoint, identity, options)
    try:
        prepare_local_dirs(req)  # here, before daemonizing: the log goes in the state dir
    except NotPrivateError as e:
        return fail(str(e), 2)
    if args.foreground:
        return run_mount(req, _print_ready(src, mountpoint))
    log_file = req.state_dir / "mount.log"
    code = daemon.start(lambda ready: run_mount(req, ready), log_file)
    if code == 0:
        print(f"mounted {src} on {mountpoint} (log: {log_file})")
    return code


def _print_ready(src: str, mountpoint: Path) -> Callable[[str | None], None]:
    def ready(error: str | None) -> None:
        if error is None:
            print(f"repomount: mounted {src} on {mountpoint}", file=sys.stderr, flush=True)
        else:
            print(f"repomount: {error}", file=sys.stderr, flush=True)

    return ready
