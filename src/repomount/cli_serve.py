"""`repomount serve`: its parser and its wiring."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

from repomount.cli_args import environment, size
from repomount.private import shared_file_problem

TOKEN_ON_COMMAND_LINE = (
    "--token is refused: every local user can read a command line (ps); set "
    "REPOMOUNT_TOKEN, or pass --token-file PATH ('-' reads it from stdin)"
)


def add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run repomount's reference server",
        description="Run repomount's reference server. Its bearer token comes from "
        "REPOMOUNT_TOKEN or --token-file, never from the command line, which every "
        "local user can read (ps, /proc/PID/cmdline).",
        epilog=environment(
            "  REPOMOUNT_TOKEN          the bearer token clients must send (unless "
            "--token-file\n                           or --no-auth)\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, help="directory for the store")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; --no-auth only on a loopback one (default 127.0.0.1)",
    )
    p.add_argument(
        "--port", type=int, default=8750, help="TCP port to listen on; 0 picks one (default 8750)"
    )
    p.add_argument(
        "--log-file",
        metavar="PATH",
        type=Path,
        default=None,
        help="append the request log (one line per request) to PATH, created 0600, "
        "instead of writing it to stderr",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no request log on stderr (start, stop and errors are still printed)",
    )
    p.add_argument(
        "--token-file",
        metavar="PATH",
        default=None,
        help="read the bearer token from PATH, '-' for stdin (default: $REPOMOUNT_TOKEN)",
    )
    # Refused with a message saying why (a command line is public to local users).
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--no-auth", action="store_true", help="accept requests without a token (loopback only)"
    )
    p.add_argument(
        "--max-file-size",
        type=size,
        default=1 << 30,
        help="largest accepted request body, e.g. 1G, 200M (default 1G)",
    )
    p.add_argument(
        "--max-pack-size",
        type=size,
        default=1 << 30,
        help="largest accepted pack of blobs (POST /blobs), all members together (default 1G)",
    )
    p.add_argument(
        "--history",
        type=int,
        default=100_000,
        metavar="N",
        help="commits of history kept per repo for ?at= and the change feed (default 100000)",
    )
    p.add_argument(
        "--gc-interval",
        type=float,
        default=3600.0,
        metavar="S",
        help="seconds between blob garbage collections, the first at start; 0: off (default 3600)",
    )
    p.add_argument(
        "--gc-grace",
        type=float,
        default=3600.0,
        metavar="S",
        help="keep a blob no commit references this long after its upload (default 3600)",
    )
    p.add_argument(
        "--gc-now",
        action="store_true",
        help="collect garbage in --data once (the server must not be running), say what "
        "was freed, and exit",
    )
    p.add_argument(
        "--require-preconditions",
        action="store_true",
        help="answer 428 to a PUT or DELETE without If-Match / If-None-Match",
    )
    p.add_argument(
        "--inject-faults",
        type=float,
        default=0.0,
        metavar="RATE",
        help="testing only: fail this fraction of repo requests (503, lost responses, delays)",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from repomount.server.run import ServeConfig, collect_now, print_error, serve

    if args.token is not None:
        print_error(TOKEN_ON_COMMAND_LINE)
        return 2
    file_token = None
    if args.token_file is not None:
        try:
            file_token = read_token_file(args.token_file)
        except ValueError as e:
            print_error(str(e))
            return 2
    # An explicit --no-auth wins over a REPOMOUNT_TOKEN left in the environment.
    env_token = None if args.no_auth else os.environ.get("REPOMOUNT_TOKEN")
    token = file_token or env_token or None
    config = ServeConfig(
        data_dir=args.data,
        host=args.host,
        port=args.port,
        token=token,
        no_auth=args.no_auth,
        max_file_size=args.max_file_size,
        max_pack_size=args.max_pack_size,
        history=args.history,
        require_preconditions=args.require_preconditions,
        fault_rate=args.inject_faults,
        gc_interval=args.gc_interval,
        gc_grace=args.gc_grace,
        log_file=args.log_file,
        quiet=args.quiet,
    )
    return collect_now(config) if args.gc_now else serve(config)


def read_token_file(name: str) -> str:
    """The token in file `name` ('-': stdin), surrounding whitespace stripped. Raises
    ValueError with a one-line message."""
    where = "stdin" if name == "-" else f"the token file {name}"
    try:
        if name == "-":
            text = sys.stdin.read()
        else:
            with open(name, encoding="utf-8") as f:
                _check_private(os.fstat(f.fileno()), name)
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {where}: {getattr(e, 'strerror', None) or e}") from None
    token = text.strip()
    if not token:
        raise ValueError(f"{where} holds no token")
    if any(c.isspace() for c in token):
        raise ValueError(f"{where} holds more than one word; the token is a single line")
    return token


def _check_private(st: os.stat_result, name: str) -> None:
    """Refuse a token file others may read or change, as a mount's config file is
    refused (a pipe, `<(...)` or `-`, is nobody else's)."""
    problem = shared_file_problem(st.st_mode) if stat.S_ISREG(st.st_mode) else None
    if problem is not None:
        raise ValueError(
            f"refusing the token file {name}: {problem}; make it private: chmod 600 {name}"
        )
