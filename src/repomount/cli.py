"""Command line: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from repomount import __version__, cli_control, cli_repo, cli_serve, options
from repomount.cli_args import (
    ENV_CONTROL,
    ENV_DEBUG,
    ENV_DIRS,
    ENV_SERVICES,
    ENV_TOKEN,
    environment,
    seconds,
    size,
)
from repomount.options import DEFAULT_DRAIN_TIMEOUT, DEFAULT_LOCAL_ONLY, Policy

# --------------------------------------------------------------------------- mount & co.


def _add_mount_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mount",
        help="mount a remote repo on a local directory",
        description="Mount a remote repo on a local directory. Keys come from the "
        "environment: REPOMOUNT_TOKEN for repomount's server, RELACE_API_KEY, "
        "TERMINALUSE_API_KEY; never from the command line, which every local user can "
        "read. The mount's state, cache and control socket are private to your user.",
        epilog=environment(ENV_TOKEN, ENV_SERVICES, ENV_DIRS, ENV_CONTROL, ENV_DEBUG),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="the remote, e.g. http://127.0.0.1:8750/REPO")
    p.add_argument("mountpoint", metavar="MNT", type=Path, help="an empty directory")
    _add_mount_options(p)
    p.set_defaults(func=_cmd_mount)

    p = _control_parser(sub, "unmount", help="upload pending changes, then unmount")
    p.description = (
        "Upload pending changes, unmount, and wait for the mount's daemon to exit. Only "
        "a repomount mount is unmounted: anything else is refused (exit 2)."
    )
    p.add_argument("mountpoint", metavar="MNT", type=Path, help="where the repo is mounted")
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT,
        metavar="S",
        help="stop waiting for uploads after this long; pending changes stay in the journal "
        "for the next mount, and the command exits 1 (default %(default)g)",
    )
    p.set_defaults(func=_cmd_unmount)

    p = _control_parser(sub, "sync", help="upload pending changes now")
    p.add_argument("mountpoint", metavar="MNT", type=Path, help="where the repo is mounted")
    p.add_argument(
        "--timeout",
        type=float,
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
        type=float,
        default=60.0,
        metavar="S",
        help="at Ctrl-C, how long to wait for changes to reach the server (default 60)",
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


def _add_mount_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument(
        "--endpoint",
        metavar="URL",
        default=None,
        help="API base URL of a hosted service (relace:, terminaluse:, sentry:), e.g. a test one",
    )
    p.add_argument(
        "--dist",
        metavar="NAME",
        default=None,
        help="sentry: the files of this dist of the release (default: those without one)",
    )
    p.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="FUSE mount options, e.g. allow_other",
    )
    p.add_argument(
        "--metadata-ttl",
        type=float,
        default=5.0,
        metavar="S",
        help="how long a directory listing is trusted (default 5)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        metavar="D",
        help="content cache (default $XDG_CACHE_HOME/repomount)",
    )
    p.add_argument(
        "--cache-size",
        type=size,
        default=10 << 30,
        metavar="SIZE",
        help="fetched content kept on disk, least recently used dropped first (default 10G)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="D",
        help="state: conflict copies, logs (default $XDG_STATE_HOME/repomount)",
    )
    p.add_argument(
        "--flush-delay",
        type=float,
        default=0.5,
        metavar="S",
        help="send changes after this much quiet, batched (default 0.5)",
    )
    p.add_argument(
        "--max-flush-window",
        type=float,
        default=5.0,
        metavar="S",
        help="...but at most this long after the first pending change (default 5)",
    )
    p.add_argument(
        "--transfers",
        type=int,
        default=4,
        metavar="N",
        help="parallel uploads where the remote has no batch commit (default 4)",
    )
    p.add_argument(
        "--on-conflict",
        choices=[p.value for p in Policy],
        default=Policy.KEEP_BOTH.value,
        help="when the remote changed under a local change (default keep-both)",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="how often to look for remote changes without a change feed (default 10)",
    )
    p.add_argument(
        "--no-change-feed",
        action="store_true",
        help="poll even where the remote has a change feed (e.g. behind a proxy)",
    )
    p.add_argument(
        "--local-only",
        metavar="GLOB,...",
        default=",".join(DEFAULT_LOCAL_ONLY),
        help="names that stay on local disk, never uploaded (default: %(default)s)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT,
        metavar="S",
        help="how long a stopping mount (SIGTERM, unmount) waits for pending uploads; what "
        "is left stays in the journal for the next mount (default %(default)g)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="show git metadata (.git) from the remote as yours, so git honours its "
        "config and hooks; only for repos whose every writer you trust",
    )
    p.add_argument(
        "--follow-remote-symlinks",
        action="store_true",
        help="follow links from the remote that point outside the mount (default: "
        "shown as read-only files holding the target)",
    )
    _add_timeout_options(p)
    p.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much the mount log (STATE_DIR/.../mount.log, or stderr with -f) says "
        "(default INFO)",
    )


def _add_timeout_options(p: argparse.ArgumentParser) -> None:
    """How long the remote may take before a request fails (EIO, or serving offline)."""
    p.add_argument(
        "--connect-timeout",
        type=seconds,
        default=options.CONNECT_TIMEOUT,
        metavar="S",
        help="to open a connection to the remote (default %(default)g)",
    )
    p.add_argument(
        "--answer-timeout",
        type=seconds,
        default=options.ANSWER_TIMEOUT,
        metavar="S",
        help="from a request sent to the first byte of its answer (default %(default)g)",
    )
    p.add_argument(
        "--read-timeout",
        type=seconds,
        default=options.READ_TIMEOUT,
        metavar="S",
        help="longest silence in the middle of an answer (default %(default)g)",
    )
    p.add_argument(
        "--min-rate",
        type=size,
        default=options.MIN_RATE,
        metavar="SIZE",
        help="bytes per second an answer must average: one of N bytes may take "
        "--read-timeout + N / this (default 32K)",
    )


def _fail(message: str, code: int = 1) -> int:
    print(f"repomount: {message}", file=sys.stderr)
    return code


def _cmd_mount(args: argparse.Namespace) -> int:
    from repomount import daemon
    from repomount.mounting import MountRequest, prepare_local_dirs, run_mount
    from repomount.private import NotPrivateError
    from repomount.remotes.registry import open_remote

    mountpoint = args.mountpoint.absolute()
    why = daemon.check_mountpoint(mountpoint)
    if why:
        return _fail(why, 2)
    try:
        identity = open_remote(args.src, endpoint=args.endpoint, dist=args.dist).identity
    except ValueError as e:
        return _fail(str(e), 2)
    req = MountRequest.from_args(args, mountpoint, identity)
    try:
        prepare_local_dirs(req)  # here, before daemonizing: the log goes in the state dir
    except NotPrivateError as e:
        return _fail(str(e), 2)
    if args.foreground:
        return run_mount(req, _print_ready(args.src, mountpoint))
    code = daemon.start(lambda ready: run_mount(req, ready), req.state_dir / "mount.log")
    if code == 0:
        print(f"mounted {args.src} on {mountpoint} (log: {req.state_dir / 'mount.log'})")
    return code


def _print_ready(src: str, mountpoint: Path) -> Callable[[str | None], None]:
    def ready(error: str | None) -> None:
        if error is None:
            print(f"repomount: mounted {src} on {mountpoint}", file=sys.stderr, flush=True)
        else:
            print(f"repomount: {error}", file=sys.stderr, flush=True)

    return ready


def _cmd_unmount(args: argparse.Namespace) -> int:
    from repomount import daemon

    code, message = daemon.unmount(args.mountpoint.absolute(), timeout=args.drain_timeout)
    print(
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
        epilog=environment(ENV_TOKEN, ENV_SERVICES, ENV_DIRS, ENV_CONTROL, ENV_DEBUG),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"repomount {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_serve.add_serve(sub)
    _add_mount_commands(sub)
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
