"""The mount's side of the control channel (control.py): answer each connection's one
JSON request line with one JSON answer line, from this mount's own user (or root) only."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from repomount import unixaddr
from repomount.control import peer_uid

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

MAX_REQUEST = 1 << 20  # bytes of a request line; a longer one is dropped unanswered


async def serve(
    path: Path, handler: Handler, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer requests at `path`, whose directory prepare_socket() made private."""
    path.unlink(missing_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with unixaddr.address(path) as addr:
        await sock.bind(addr)
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
            if not chunk or len(buf) > MAX_REQUEST:
                return
            buf += chunk
        uid = peer_uid(stream.socket)
        try:
            if uid not in (os.getuid(), 0):
                log.warning("control: refused a command from uid %d (not this mount's user)", uid)
                reply = {"ok": False, "error": "this mount takes commands from its own user only"}
            else:
                reply = await handler(json.loads(buf.split(b"\n", 1)[0]))
        except Exception as e:  # a bad request must not take the mount down
            log.exception("control request failed")
            reply = {"ok": False, "error": str(e)}
        try:
            await stream.send_all(json.dumps(reply).encode() + b"\n")
        except trio.BrokenResourceError:
            pass
