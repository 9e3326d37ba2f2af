"""Command line: argument parsing and wiring only."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from repomount import __version__
from repomount.options import DEFAULT_LOCAL_ONLY, Policy


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run repomount's reference server",
        description="Run repomount's reference server. Its bearer token comes from "
        "REPOMOUNT_TOKEN or --token-file, never from the command line, which every "
        "local user can read (ps, /proc/PID/cmdline).",
    )
    p.add_argument("--data", required=True, type=Path, help="directory for the store")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8750)
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
        type=_size,
        default=1 << 30,
        help="largest accepted request body, e.g. 1G, 200M (default 1G)",
    )
    p.add_argument(
        "--max-pack-size",
        type=_size,
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
    p.set_defaults(func=_cmd_serve)


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        value = int(float(num) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


TOKEN_ON_COMMAND_LINE = (
    "--token is refused: every local user can read a command line (ps); set "
    "REPOMOUNT_TOKEN, or pass --token-file PATH ('-' reads it from stdin)"
)


def _cmd_serve(args: argparse.Namespace) -> int:
    from repomount.server.run import ServeConfig, collect_now, print_error, serve

    if args.token is not None:
        print_error(TOKEN_ON_COMMAND_LINE)
        return 2
    file_token = None
    if args.token_file is not None:
        try:
            file_token = _read_token_file(args.token_file)
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
    )
    return collect_now(config) if args.gc_now else serve(config)


def _read_token_file(name: str) -> str:
    """The token in file `name` ('-': stdin), surrounding whitespace stripped. Raises
    ValueError with a one-line message."""
    where = "stdin" if name == "-" else f"the token file {name}"
    try:
        if name == "-":
            text = sys.stdin.read()
        else:
            with open(name, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {where}: {getattr(e, 'strerror', None) or e}") from None
    token = text.strip()
    if not token:
        raise ValueError(f"{where} holds no token")
    if any(c.isspace() for c in token):
        raise ValueError(f"{where} holds more than one word; the token is a single line")
    return token


# --------------------------------------------------------------------------- mount & co.


def _add_mount_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mount",
        help="mount a remote repo on a local directory",
        description="Mount a remote repo on a local directory. Keys come from the "
        "environment: REPOMOUNT_TOKEN for repomount's server, RELACE_API_KEY, "
        "TERMINALUSE_API_KEY; never from the command line, which every local user can "
        "read. The mount's state, cache and control socket are private to your user.",
    )
    p.add_argument("src", metavar="SRC", help="the remote, e.g. http://127.0.0.1:8750/REPO")
    p.add_argument("mountpoint", metavar="MNT", type=Path, help="an empty directory")
    _add_mount_options(p)
    p.set_defaults(func=_cmd_mount)

    p = sub.add_parser("unmount", help="upload pending changes, then unmount")
    p.add_argument("mountpoint", metavar="MNT", type=Path)
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="stop waiting for uploads after this long; pending changes stay in the journal "
        "for the next mount, and the command exits 1 (default 120)",
    )
    p.set_defaults(func=_cmd_unmount)

    p = sub.add_parser("sync", help="upload pending changes now")
    p.add_argument("mountpoint", metavar="MNT", type=Path)
    p.add_argument("--timeout", type=float, default=120.0, metavar="S")
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("status", help="show a mount's pending changes, conflicts, errors")
    p.add_argument("mountpoint", metavar="MNT", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("demo", help="serve a sample repo locally and mount it")
    p.add_argument(
        "mountpoint",
        metavar="MNT",
        type=Path,
        nargs="?",
        default=Path("repomount-demo"),
        help="default: ./repomount-demo",
    )
    p.set_defaults(func=_cmd_demo)


def _add_mount_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument(
        "--endpoint",
        metavar="URL",
        default=None,
        help="API base URL of a hosted service (relace:, terminaluse:, oxen:), e.g. a test server",
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
        type=_size,
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
        default=60.0,
        metavar="S",
        help="how long SIGTERM/unmount wait for pending uploads (default 60)",
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
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


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
        identity = open_remote(args.src, endpoint=args.endpoint).identity
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


def _control(mountpoint: Path, cmd: str, **kw: object) -> dict[str, object] | None:
    from repomount import control

    try:
        return control.request(mountpoint.absolute(), cmd, **kw)  # type: ignore[arg-type]
    except control.UntrustedControl as e:
        print(f"repomount: {e}", file=sys.stderr)
        return None
    except OSError:
        print(f"repomount: no repomount mount answers at {mountpoint}", file=sys.stderr)
        return None


def _cmd_sync(args: argparse.Namespace) -> int:
    reply = _control(args.mountpoint, "sync", wait=args.timeout + 5, timeout=args.timeout)
    if reply is None:
        return 1
    pending = reply.get("pending") or []
    if reply.get("ok"):
        print("everything is uploaded")
        return 0
    for item in reply.get("set_aside") or []:  # type: ignore[attr-defined]
        print(
            f"repomount: {item['op']} of {item['path']} set aside: {item['reason']}"
            " (see set-aside.txt in the state directory)",
            file=sys.stderr,
        )
    if not pending:
        return 1
    print(
        f"repomount: {len(pending)} change(s) still pending: {reply.get('last_error')}",  # type: ignore[arg-type]
        file=sys.stderr,
    )
    return 1


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    reply = _control(args.mountpoint, "status", wait=30)
    if reply is None:
        return 1
    reply.pop("ok", None)
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    for key, value in reply.items():
        if isinstance(value, list):
            print(f"{key}: {len(value)}")
            for item in value:
                print(f"  {item}")
        else:
            print(f"{key}: {value}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from repomount.demo import run_demo

    return run_demo(args.mountpoint.absolute())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repomount", description="Mount a remote repository as a local folder."
    )
    parser.add_argument("--version", action="version", version=f"repomount {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_mount_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
