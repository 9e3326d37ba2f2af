"""The control channel between `repomount sync/status/unmount` and a running mount.

A Unix socket per mountpoint, private to the user; one JSON request line, one JSON
answer line. The socket's name is derived from the mountpoint's real path so the CLI can
find the daemon from MNT alone.

Other local users must neither command a mount nor answer for one. The socket lives in
$XDG_RUNTIME_DIR/repomount, else $TMPDIR/repomount-UID (/tmp without TMPDIR), a
directory the mount creates 0700 and both sides check (ours, no access for anyone else,
not a symbolic link): one another user pre-created is refused. Each side then checks
the other's uid with SO_PEERCRED: the CLI believes only a mount running as itself; a
mount obeys only its own user, and root (who can read and signal it anyway).
A socket path too long for a socket address is reached through its directory
(unixaddr.py), so a long XDG_RUNTIME_DIR or TMPDIR works too.

This module is the CLI's side (and what both sides share); the mount's answering side,
on trio, is control_server.py: `repomount sync` loads no trio (0.06 s of its 0.13).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repomount import private, unixaddr

if TYPE_CHECKING:
    import trio


_WHAT = "the control directory"
_HINT = "remove it, or set XDG_RUNTIME_DIR to a directory of your own"
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class UntrustedControl(ConnectionError):
    """The control directory or the process answering there is another user's: the
    CLI sends it nothing and believes nothing from it. One-line message."""


def runtime_dir() -> Path:
    """Where the control sockets live (the directory is made by `prepare_socket`)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "repomount"
    return Path(os.environ.get("TMPDIR") or "/tmp") / f"repomount-{os.getuid()}"


def socket_path(mountpoint: str | Path) -> Path:
    real = os.path.realpath(mountpoint)
    digest = hashlib.sha256(real.encode()).hexdigest()[:20]
    return runtime_dir() / f"{digest}.sock"


def prepare_socket(mountpoint: str | Path) -> Path:
    """For the mount: the socket's path, its directory created 0700 or checked.
    Raises private.NotPrivateError when another user controls the directory."""
    private.make_strict_dir(runtime_dir(), _WHAT, _HINT)
    return socket_path(mountpoint)


def _note_beside(socket: Path) -> Path:
    """Where the mount whose control socket is `socket` notes its state directory."""
    return socket.with_suffix(".state")


def note_state_dir(socket: Path, state_dir: Path) -> None:
    """For the mount, once mounted: which state directory holds its journal, beside its
    socket. A daemon killed (kill -9, the OOM killer) leaves it behind, so `repomount
    unmount` can still tell what it left unsent. `socket`: the control socket's path,
    found before mounting: resolving the mountpoint now would stat the mount from the
    loop that must answer the stat (with `--metadata-ttl 0` the kernel keeps no
    attributes to answer from, and the mount hung for ever as it started)."""
    note = _note_beside(socket)
    partial = note.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(str(state_dir.absolute()))
    os.replace(partial, note)  # (a reader never sees half a path)


def forget_state_dir(mountpoint: str | Path) -> None:
    """After an unmount: the mount's note is no longer true."""
    forget_state_note(socket_path(mountpoint))


def listening(path: Path) -> bool:
    """Whether a process listens on the socket at `path` (a connection refused: the
    socket of a daemon that was killed); when in doubt, yes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            with unixaddr.address(path) as addr:
                s.connect(addr)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:
            return True
    return True


def hold_mountpoint(socket: Path) -> int | None:
    """For the mount, before mounting: a lock on its mountpoint, a file beside its
    control socket, held while the mount runs (the kernel drops it when the process
    dies); None when another repomount process holds it. Two mounts started on one
    empty directory at once both passed their checks, FUSE stacked the second over the
    first, and the first lost its control socket to the second."""
    return try_lock(socket.with_suffix(".lock"))


def try_lock(path: Path) -> int | None:
    """An exclusive lock on the file `path` (made 0600 if missing), held until its
    descriptor is closed or the process dies; None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def forget_state_note(socket: Path) -> None:
    """For the mount, as it leaves (`socket` as for note_state_dir)."""
    _note_beside(socket).unlink(missing_ok=True)


def noted_state_dir(mountpoint: str | Path) -> Path | None:
    """The state directory the mount at `mountpoint` noted, or None (no note, or one in
    a control directory that is not ours alone: not believed)."""
    note = _note_beside(socket_path(mountpoint))
    try:
        private.check_strict_dir(note.parent, _WHAT, _HINT)
        text = note.read_text()
    except (OSError, private.NotPrivateError):
        return None
    return Path(text) if text.startswith("/") else None


def peer_uid(sock: socket.socket | trio.socket.SocketType) -> int:
    """The uid of the process at the other end of a connected Unix socket (for a
    listener: its uid when it called listen())."""
    _pid, uid, _gid = _CRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    )
    return uid


def request(
    mountpoint: str | Path, cmd: str, *, wait: float | None = None, **args: Any
) -> dict[str, Any]:
    """Blocking client call, waiting up to `wait` seconds for the answer. Raises OSError
    when no mount answers there: UntrustedControl when another user's process would."""
    path = socket_path(mountpoint)
    try:
        private.check_strict_dir(path.parent, _WHAT, _HINT)
    except private.NotPrivateError as e:
        raise UntrustedControl(str(e)) from None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(wait)
        with unixaddr.address(path) as addr:
            s.connect(addr)
        uid = peer_uid(s)  # before sending anything: an impostor learns nothing
        if uid != os.getuid():
            raise UntrustedControl(
                f"refusing the mount's answer at {path}: it comes from uid {uid}, "
                f"not from us (uid {os.getuid()}); another user may be impersonating it"
            )
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("the mount closed the control connection")
            buf += chunk
    reply: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
    return reply
