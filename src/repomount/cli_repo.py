"""`repomount repo create|list|delete`: the repos of repomount's own server, without
curl. The token comes from where a mount takes it: REPOMOUNT_TOKEN."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from repomount.cli_control import fail
from repomount.printable import printable

if TYPE_CHECKING:
    from repomount.remotes.native_admin import NativeServer

T = TypeVar("T")

TOKEN_ENV = "REPOMOUNT_TOKEN"  # (registry.TOKEN_ENV; not imported: --help loads no httpx)


def add_repo_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "repo",
        help="create, list or delete the repos of repomount's own server",
        description="Create, list or delete the repos of a `repomount serve` server. The "
        f"token comes from {TOKEN_ENV}, as for a mount.",
        epilog="environment:\n"
        f"  {TOKEN_ENV}          the server's bearer token (not needed with serve --no-auth)\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = p.add_subparsers(dest="repo_command", required=True, metavar="COMMAND")

    c = commands.add_parser("create", help="create an empty repo")
    c.add_argument("url", metavar="URL", help="the new repo: http://HOST:PORT/NAME")
    c.set_defaults(func=cmd_create)

    c = commands.add_parser("list", help="list the server's repos")
    c.add_argument("url", metavar="URL", help="the server: http://HOST:PORT")
    c.add_argument(
        "--json", action="store_true", help="print a JSON list of {name, head, created_at}"
    )
    c.set_defaults(func=cmd_list)

    c = commands.add_parser("delete", help="delete a repo, its files and its history")
    c.add_argument("url", metavar="URL", help="the repo: http://HOST:PORT/NAME")
    c.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask first (needed when stdin is not a terminal)",
    )
    c.set_defaults(func=cmd_delete)


def _run(url: str, with_repo: bool, job: Callable[..., Awaitable[T]]) -> tuple[int, T | None]:
    """Run `job(server, name)` against the server of `url`: (exit code, its result);
    a failure is said on stderr."""
    import trio

    from repomount.remotes.native_admin import AdminError, NativeServer
    from repomount.remotes.registry import native_location

    try:
        base, name = native_location(url, with_repo=with_repo)
    except ValueError as e:
        return fail(str(e), 2), None

    try:
        server = NativeServer(base, token=os.environ.get(TOKEN_ENV) or None)
    except ValueError as e:  # (a token no HTTP header can carry)
        return fail(f"{TOKEN_ENV}: {e}", 2), None

    async def go() -> T:
        try:
            return await job(server, name)
        finally:
            await server.aclose()

    try:
        return 0, trio.run(go)
    except AdminError as e:
        return fail(str(e)), None


def cmd_create(args: argparse.Namespace) -> int:
    async def create(server: NativeServer, name: str) -> str:
        repo = await server.create_repo(name)
        return f"{server.base_url}/{quote(repo.name, safe='')}"

    code, url = _run(args.url, True, create)
    if url is not None:
        print(f"created {url}; mount it with: repomount mount {url} MNT")
    return code


def cmd_list(args: argparse.Namespace) -> int:
    code, repos = _run(args.url, False, lambda server, _: server.list_repos())
    if repos is None:
        return code
    if args.json:
        print(json.dumps([vars(r) for r in repos], indent=2))
    elif not repos:
        print(f"no repos on {args.url.strip()} (repomount repo create URL/NAME makes one)",
              file=sys.stderr)  # fmt: skip
    else:
        names = [printable(r.name) for r in repos]  # (the server's to choose)
        width = max(len("NAME"), *map(len, names))
        print(f"{'NAME':<{width}}  {'HEAD':>8}  CREATED")
        for name, r in zip(names, repos, strict=True):
            line = f"{name:<{width}}  {r.head or '-':>8}  {r.created_at or '-'}"
            print(printable(line))
    return code


def cmd_delete(args: argparse.Namespace) -> int:
    url = args.url.strip()
    if not args.yes:
        if not sys.stdin.isatty():
            return fail(f"deleting {url} removes its files and history for good; "
                         "add --yes to confirm", 2)  # fmt: skip
        try:
            answer = input(f"delete {url}, all its files and history? [y/N] ")
        except EOFError:  # Ctrl-D: no answer is a no
            print(file=sys.stderr)
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            return fail("not deleted", 1)
    code, _ = _run(url, True, lambda server, name: server.delete_repo(name))
    if code == 0:
        print(f"deleted {url}")
    return code
