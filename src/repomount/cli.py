"""Command line: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from repomount import __version__, cli_config, cli_control, cli_mount, cli_repo, cli_serve
from repomount.cli_args import (
    ENV_CONTROL,
    ENV_DEBUG,
    ENV_DIRS,
    ENV_SERVICES,
    ENV_TOKEN,
    environment,
    seconds,
)
from repomount.cli_config import ENV_CONFIG
from repomount.cli_options import add_mount_options
from repomount.options import DEFAULTS

# --------------------------------------------------------------------------- mount & co.


def _add_mount_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mount",
        help="mount a remote repo on a local directory",
        description="Mount a remote repo on a local directory. SRC is a remote's "
        "address, or NAME: for a remote named in the config file (with its token, "
        "mountpoint and options; options given here win). Keys come from the config "
        "file or the environment: REPOMOUNT_TOKEN for repomount's server, "
        "RELACE_API_KEY, TERMINALUSE_API_KEY, OXEN_API_KEY, SENTRY_AUTH_TOKEN (below); "
        "never from the command line, which every local user can read. The mount's "
        "state, cache and control socket are private "
        "to your user.",
        epilog=environment(ENV_TOKEN, ENV_SERVICES, ENV_DIRS, ENV_CONFIG, ENV_CONTROL, ENV_DEBUG),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "src",
        metavar="SRC",
        help="the remote, e.g. http://127.0.0.1:8750/REPO, or NAME: (config file)",
    )
    p.add_argument(
        "mountpoint",
        metavar="MNT",
        type=Path,
        nargs="?",
        default=None,
        help="an empty directory (default: the named remote's mountpoint)",
    )
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    cli_config.add_config_option(p)
    add_mount_options(p)
    p.set_defaults(func=cli_mount.cmd_mount)

    p = _control_parser(sub, "unmount", help="upload pending changes, then unmount")
    p.description = (
        "Upload pending changes, unmount, and wait for the mount's daemon to exit. Only "
        "a repomount mount is unmounted: anything else is refused (exit 2)."
    )
    p.add_argument("mountpoint", metavar="MNT", type=Path, help="where the repo is mounted")
    p.add_argument(
        "--drain-timeout",
        type=seconds,
        default=DEFAULTS.drain_timeout,
        metavar="S",
        help="stop waiting for uploads after this long; pending changes stay in the journal "
        "for the next mount, and the command exits 1 (default %(default)g)",
    )
    p.set_defaults(func=_cmd_unmount)

    p = _control_parser(sub, "sync", help="upload pending changes now")
    p.add_argument("mountpoint", metavar="MNT", type=Path, help="where the repo is mounted")
    p.add_argument(
        "--timeout",
        type=seconds,
        default=120.0,
        metavar="S",
        help="give up after this long; what is not uploaded stays pending and the command "
        "exits 1 (default %(default)g)",
    )
    p.set_defaults(func=cli_control.cmd_sync)

    p = _control_parser(sub, "status", help="show a mount's pending changes, conflicts, errors")
    p.add_argument("mountpoint", metavar="MNT", type=Path, help="where the repo is mounted")
    p.add_argument(
        "--json",
        action="store_true",
        help="print everything as one JSON object, every pending change included (for scripts)",
    )
    p.set_defaults(func=cli_control.cmd_status)

    p = sub.add_parser("demo", help="serve a sample repo locally and mount it")
    p.add_argument(
        "mountpoint",
        metavar="MNT",
        type=Path,
        nargs="?",
        default=Path("repomount-demo"),
        help="an empty directory to mount the demo repo on (default ./repomount-demo)",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        metavar="D",
        help="keep the demo server's data and the mount's state in D, and reuse them if "
        "there (default: a temporary directory, removed at the end once everything "
        "reached the server)",
    )
    p.add_argument(
        "--drain-timeout",
        type=seconds,
        default=DEFAULTS.drain_timeout,
        metavar="S",
        help="at Ctrl-C, how long to wait for changes to reach the server (default %(default)g)",
    )
    p.set_defaults(func=_cmd_demo)


def _control_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse.ArgumentParser:
    """A command that talks to a running mount over its control socket."""
    return sub.add_parser(
        name,
        help=help,
        epilog=environment(ENV_CONTROL),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _cmd_unmount(args: argparse.Namespace) -> int:
    from repomount import daemon

    code, message = daemon.unmount(args.mountpoint.absolute(), timeout=args.drain_timeout)
    # (it names pending changes and the remote's last error)
    cli_control.say(
        message if code == 0 else f"repomount: {message}",
        file=sys.stdout if code == 0 else sys.stderr,
    )
    return code


def _cmd_demo(args: argparse.Namespace) -> int:
    from repomount.demo import run_demo

    return run_demo(
        args.mountpoint.absolute(),
        work_dir=args.dir.absolute() if args.dir else None,
        drain_timeout=args.drain_timeout,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repomount",
        description="Mount a remote repository as a local folder. "
        "`repomount COMMAND --help` says more about each command.",
        epilog=environment(ENV_TOKEN, ENV_SERVICES, ENV_DIRS, ENV_CONFIG, ENV_CONTROL, ENV_DEBUG),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"repomount {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_serve.add_serve(sub)
    _add_mount_commands(sub)
    cli_config.add_config_commands(sub)
    cli_repo.add_repo_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `repomount status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
