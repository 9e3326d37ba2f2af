"""`repomount serve`: open the store, serve the app on Hypercorn's trio worker, stop cleanly;
with it, the periodic blob garbage collection. `--gc-now`: one collection, then exit."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import sqlite3
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

import hypercorn.trio
import hypercorn.trio.tcp_server
import trio
from hypercorn.config import Config as HypercornConfig

from repomount import h11body, onewrite
from repomount.headertoken import token_problem
from repomount.server import gc
from repomount.server.app import create_app
from repomount.server.backend import Backend, ServerOptions
from repomount.server.requestguard import is_loopback
from repomount.server.sqlite_commit import PAUSE_COMMIT_ENV, pause_marker_for_test
from repomount.server.sqlite_store import DataDirLocked, SqliteStore

# Hypercorn reads a connection 64 KiB at a time, and each read is a round of Python in
# hypercorn and h11 (a cancel scope, a parse, a channel send to the app): in a large
# upload that work, not the link, was the limit (server CPU for a 256 MiB PUT 1.2 -> 0.7
# s; 256 KiB reads kept most of the cost). A read returns what has arrived, so small
# requests are unaffected. The cost: a connection whose app is not reading its body holds
# up to APP_QUEUE reads queued, so that queue is shorter than hypercorn's 10. (MAX_RECV
# is a module constant of hypercorn's trio server, read at each receive: a patch of its
# internals, checked by tests/unit/test_socket_reads.py.)
SOCKET_READ = 1 << 20
APP_QUEUE = 2  # body events queued per connection (hypercorn's max_app_queue_size)
if hasattr(hypercorn.trio.tcp_server, "MAX_RECV"):
    hypercorn.trio.tcp_server.MAX_RECV = SOCKET_READ
h11body.install()  # (and h11 hands each read's bytes over without two more copies)
onewrite.install_server()  # (an answer's head goes out in one write with its body)

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
    gc_interval: float = gc.DEFAULT_INTERVAL  # seconds between passes; 0: none
    gc_grace: float = gc.DEFAULT_GRACE  # seconds an unreferenced upload is kept
    log_file: Path | None = None  # the request log goes here (appended) instead of stderr
    quiet: bool = False  # no request log on stderr


MAX_HISTORY = (1 << 63) - 1


def config_problem(config: ServeConfig) -> str | None:
    """Why this configuration must not start, or None."""
    if problem := store_problem(config):
        return problem
    if config.token and config.no_auth:
        return "give either --token-file or --no-auth, not both"
    if not config.token and not config.no_auth:
        return (
            "no token: set REPOMOUNT_TOKEN or pass --token-file PATH "
            "(or --no-auth on a loopback host)"
        )
    if config.token and (problem := token_problem(config.token)):
        return f"the token {problem}: no client could send it"
    if not config.host.strip():  # (the socket layer would take it for every interface)
        return "--host is empty: give an address (0.0.0.0 for every interface)"
    if config.no_auth and not is_loopback(config.host):
        return f"--no-auth is only allowed on a loopback host, not {config.host!r}"
    if not 0 <= config.port <= 65535:
        return f"--port must be 0 to 65535, not {config.port}"
    if not 0.0 <= config.fault_rate <= 1.0:
        return f"--inject-faults must be a fraction from 0 to 1, not {config.fault_rate}"
    if not config.gc_interval >= 0.0:
        return f"--gc-interval must be 0 (no collection) or more seconds, not {config.gc_interval}"
    return None


def store_problem(config: ServeConfig) -> str | None:
    """Why the store cannot be opened as configured (for serving or for --gc-now)."""
    if config.data_dir.exists() and not config.data_dir.is_dir():
        return f"--data {config.data_dir} is not a directory"
    if config.history < 1:
        return "--history must keep at least 1 commit"
    if config.history > MAX_HISTORY:  # SQLite's integers are 64 bits
        return f"--history must be at most {MAX_HISTORY}, not {config.history}"
    if not config.gc_grace >= 0.0:  # (also refuses NaN)
        return f"--gc-grace must be 0 or more seconds, not {config.gc_grace}"
    return None


def store_failure(config: ServeConfig, error: Exception) -> str:
    """Why the store in --data could not be opened, in one line (a full disk is an
    sqlite3 error: "database or disk is full", "disk I/O error")."""
    if isinstance(error, DataDirLocked):
        return str(error)
    said = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    where = getattr(error, "filename", None)
    return f"cannot open the store in {config.data_dir}: {f'{where}: ' if where else ''}{said}"


def print_error(message: str) -> None:
    print(f"{PREFIX}: error: {message}", file=sys.stderr, flush=True)


def serve(config: ServeConfig) -> int:
    """Run until SIGTERM or SIGINT; 0 after a clean stop, 2 for a bad configuration."""
    problem = config_problem(config)
    if problem is not None:
        print_error(problem)
        return 2
    try:
        pause = pause_marker_for_test()  # TEST ONLY: None unless a test set the variable
    except ValueError as error:
        print_error(str(error))
        return 2
    if pause is not None:
        print(
            f"{PREFIX}: WARNING: {PAUSE_COMMIT_ENV} is set: every commit will hang before it "
            "commits (a test-only pause point; never set it outside tests)",
            file=sys.stderr,
            flush=True,
        )
    made = not config.data_dir.exists()  # (a server that never listened removes it)
    try:
        store = SqliteStore(config.data_dir, history=config.history, pause_commit_for_test=pause)
    except (DataDirLocked, OSError, sqlite3.Error) as error:
        print_error(store_failure(config, error))
        return 1
    options = ServerOptions(
        token=None if config.no_auth else config.token,
        max_file_size=config.max_file_size,
        max_pack_size=config.max_pack_size,
        require_preconditions=config.require_preconditions,
    )
    try:
        request_log = open_request_log(config)
    except OSError as error:
        store.close()
        print_error(f"cannot open the log file {config.log_file}: {error.strerror or error}")
        return 1
    status = 0
    listened = trio.Event()  # (trio's Event outlives trio.run: only .set() needs it)
    try:
        trio.run(_serve, Backend(store, options), config, request_log, listened)
    except* OSError as group:
        print_error(f"cannot listen on {config.host}:{config.port}: {listen_failure(group)}")
        status = 1
    finally:
        if made and not listened.is_set():
            # Never listened, so nothing was stored: a wrong --port changes nothing.
            # (Removed while the store's lock is held: no other server opens it first.)
            shutil.rmtree(config.data_dir, ignore_errors=True)
        store.close()
        if request_log is not None:
            request_log.close()
    return status


def open_request_log(config: ServeConfig) -> TextIO | None:
    """--log-file opened for the request log: appended, created 0600 (it names every
    path written); None without it (stderr, or no log with --quiet)."""
    if config.log_file is None:
        return None
    fd = os.open(config.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8", buffering=1)


def listen_failure(group: BaseExceptionGroup[OSError]) -> str:
    """What the OSError inside trio's (possibly nested) exception group says, in words:
    "address already in use", not "Exceptions from Trio nursery"."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    if isinstance(error, socket.gaierror):  # (its errno is an EAI_ code: not for strerror)
        return f"no such address ({error.strerror})"
    code = getattr(error, "errno", None)
    if code == errno.EADDRINUSE:
        return "address already in use (another server listens there; choose another --port)"
    if code is not None:
        return os.strerror(code).lower()
    return str(error)


def collect_now(config: ServeConfig) -> int:
    """One garbage collection pass over the data directory, saying what it freed; 0
    done, 1 when the directory is missing or in use (its server collects on its own),
    2 for a bad configuration."""
    problem = store_problem(config)
    if problem is not None:
        print_error(problem)
        return 2
    if not (config.data_dir / "meta.sqlite3").is_file():
        print_error(f"{config.data_dir} is not a repomount server's data directory")
        return 1
    try:
        store = SqliteStore(config.data_dir, history=config.history)
    except DataDirLocked as error:
        print_error(f"{error} (a running server collects garbage itself, see --gc-interval)")
        return 1
    except (OSError, sqlite3.Error) as error:
        print_error(store_failure(config, error))
        return 1
    try:
        report = store.collect_garbage(config.gc_grace)
    except (OSError, sqlite3.Error) as error:
        print_error(f"garbage collection failed: {error}")
        return 1
    finally:
        store.close()
    print(f"{PREFIX}: gc: {gc.describe(report)}", flush=True)
    return 0


async def _serve(
    backend: Backend, config: ServeConfig, request_log: TextIO | None, listened: trio.Event
) -> None:
    hconfig = HypercornConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hconfig.bind = [f"{host}:{config.port}"]
    hconfig.loglevel = "WARNING"  # our own access log says what happens; errors still show
    hconfig.accesslog = None
    hconfig.graceful_timeout = config.graceful_timeout
    hconfig.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    hconfig.max_app_queue_size = APP_QUEUE
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(_wait_for_signal, stop, backend)
        # Starlette's loosely typed ASGI callable is a valid hypercorn ASGIFramework.
        app = cast(
            "ASGIFramework",
            create_app(
                backend,
                fault_rate=config.fault_rate,
                log_requests=request_log is not None or not config.quiet,
                request_log=request_log,
            ),
        )
        binds = await nursery.start(
            partial(hypercorn.trio.serve, app, hconfig, shutdown_trigger=stop.wait)
        )
        listened.set()
        # Tests and scripts wait for this line and read the port from it.
        print(f"{PREFIX}: listening on {binds[0]}", file=sys.stderr, flush=True)
        if config.gc_interval > 0:
            nursery.start_soon(
                partial(
                    gc.collect_periodically,
                    backend.store,
                    interval=config.gc_interval,
                    grace=config.gc_grace,
                    stop=stop,
                    prefix=PREFIX,
                )
            )


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
