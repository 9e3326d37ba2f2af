"""The control channel between `repomount sync/status/unmount` and a running mount.

A Unix socket per mountpoint, private to the user; one JSON request line, one JSON
answer line. The socket's name is derived from the mountpoint's real path so the CLI can
find the daemon from MNT alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    d = Path(base) / "repomount" if base else Path(f"/tmp/repomount-{os.getuid()}")
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def socket_path(mountpoint: str | Path) -> Path:
    real = os.path.realpath(mountpoint)
    digest = hashlib.sha256(real.encode()).hexdigest()[:20]
    return runtime_dir() / f"{digest}.sock"


async def serve(
    path: Path, handler: Handler, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    path.unlink(missing_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started()
    try:
        async with trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(_answer, stream, handler)
    finally:
        path.unlink(missing_ok=True)


async def _answer(stream: trio.SocketStream, handler: Handler) -> None:
    async with stream:
        buf = b""
        while b"\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buf += chunk
        try:
            request = json.loads(buf.split(b"\n", 1)[0])
            reply = await handler(request)
        except Exception as e:  # a bad request must not take the mount down
            log.exception("control request failed")
            reply = {"ok": False, "error": str(e)}
        try:
            await stream.send_all(json.dumps(reply).encode() + b"\n")
        except trio.BrokenResourceError:
            pass


def request(
    mountpoint: str | Path, cmd: str, *, wait: float | None = None, **args: Any
) -> dict[str, Any]:
    """Blocking client call, waiting up to `wait` seconds for the answer. Raises OSError
    when no mount answers there."""
    path = socket_path(mountpoint)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(wait)
        s.connect(str(path))
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("the mount closed the control connection")
            buf += chunk
    reply: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
    return reply
