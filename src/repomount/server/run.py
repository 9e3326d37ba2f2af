"""`repomount serve`: open the store, serve the app on Hypercorn's trio worker, stop cleanly."""

from __future__ import annotations

import ipaddress
import signal
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig

from repomount.server.app import create_app
from repomount.server.backend import Backend, ServerOptions
from repomount.server.sqlite_commit import PAUSE_COMMIT_ENV, pause_marker_for_test
from repomount.server.sqlite_store import DataDirLocked, SqliteStore

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

PREFIX = "repomount serve"
KEEP_ALIVE_TIMEOUT = 5.0  # seconds an idle keep-alive connection stays open


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8750
    token: str | None = None
    no_auth: bool = False
    max_file_size: int = 1 << 30
    max_pack_size: int = 1 << 30
    history: int = 100_000
    require_preconditions: bool = False
    graceful_timeout: float = 5.0
    fault_rate: float = 0.0  # testing only: see server/faults.py


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def config_problem(config: ServeConfig) -> str | None:
    """Why this configuration must not start, or None."""
    if config.token and config.no_auth:
        return "give either --token (or REPOMOUNT_TOKEN) or --no-auth, not both"
    if not config.token and not config.no_auth:
        return "no token: pass --token T or set REPOMOUNT_TOKEN (or --no-auth on a loopback host)"
    if config.no_auth and not is_loopback(config.host):
        return f"--no-auth is only allowed on a loopback host, not {config.host!r}"
    if not 0 <= config.port <= 65535:
        return f"--port must be 0 to 65535, not {config.port}"
    if config.history < 1:
        return "--history must keep at least 1 commit"
    if not 0.0 <= config.fault_rate <= 1.0:
        return f"--inject-faults must be a fraction from 0 to 1, not {config.fault_rate}"
    return None


def _error(message: str) -> None:
    print(f"{PREFIX}: error: {message}", file=sys.stderr, flush=True)


def serve(config: ServeConfig) -> int:
    """Run until SIGTERM or SIGINT; 0 after a clean stop, 2 for a bad configuration."""
    problem = config_problem(config)
    if problem is not None:
        _error(problem)
        return 2
    try:
        pause = pause_marker_for_test()  # TEST ONLY: None unless a test set the variable
    except ValueError as error:
        _error(str(error))
        return 2
    if pause is not None:
        print(
            f"{PREFIX}: WARNING: {PAUSE_COMMIT_ENV} is set: every commit will hang before it "
            "commits (a test-only pause point; never set it outside tests)",
            file=sys.stderr,
            flush=True,
        )
    try:
        store = SqliteStore(config.data_dir, history=config.history, pause_commit_for_test=pause)
    except (DataDirLocked, OSError) as error:
        _error(str(error))
        return 1
    options = ServerOptions(
        token=None if config.no_auth else config.token,
        max_file_size=config.max_file_size,
        max_pack_size=config.max_pack_size,
        require_preconditions=config.require_preconditions,
    )
    status = 0
    try:
        trio.run(_serve, Backend(store, options), config)
    except* OSError as group:
        _error(f"cannot listen on {config.host}:{config.port}: {group.exceptions[0]}")
        status = 1
    finally:
        store.close()
    return status


async def _serve(backend: Backend, config: ServeConfig) -> None:
    hconfig = HypercornConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hconfig.bind = [f"{host}:{config.port}"]
    hconfig.loglevel = "WARNING"  # our own access log says what happens; errors still show
    hconfig.accesslog = None
    hconfig.graceful_timeout = config.graceful_timeout
    hconfig.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(_wait_for_signal, stop, backend)
        # Starlette's loosely typed ASGI callable is a valid hypercorn ASGIFramework.
        app = cast("ASGIFramework", create_app(backend, fault_rate=config.fault_rate))
        binds = await nursery.start(
            partial(hypercorn.trio.serve, app, hconfig, shutdown_trigger=stop.wait)
        )
        # Tests and scripts wait for this line and read the port from it.
        print(f"{PREFIX}: listening on {binds[0]}", file=sys.stderr, flush=True)


async def _wait_for_signal(
    stop: trio.Event,
    backend: Backend,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            print(f"{PREFIX}: {signal.Signals(signum).name}, stopping", file=sys.stderr, flush=True)
            backend.hub.close()  # long-polls answer now instead of holding the shutdown
            stop.set()
            return
