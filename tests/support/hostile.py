"""A hostile native server, for tests of the client's defences (issues 17 and 18).

A tiny real HTTP/1.1 server on 127.0.0.1, run in threads of the test process, that
speaks enough of the native protocol (docs/native-api.md) to be listed, read and
mounted: repo info, tree (recursive or not), files (GET, HEAD, ranges), POST /read and
the change feed. A test makes it misbehave on the requests it picks (`misbehave`):
stay silent, stop half-way, trickle, send an endless or a deeply nested body, never
end a whole answer, or answer anything at all; and it can list raw entries that no
filesystem can hold (`bad_entries`). `requests` records what arrived, and `wait_for`
waits for one.

Stalls last until the client goes away or the server is closed: nothing here sleeps
beyond what a test asked for.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from repomount import tarwrite

HEAD = "7"

Reply = tuple[int, dict[str, str], bytes]  # status, headers, body
Honest = Callable[[], Reply]  # what a well-behaved server would answer


@dataclass(frozen=True)
class Request:
    method: str
    route: str  # the path after /v1/repos/{repo}: "", "/tree", "/files/a.txt", ...
    query: Mapping[str, str]

    def is_tree(self, path: str | None = None) -> bool:
        return self.route == "/tree" and (path is None or self.query.get("path", "") == path)


# --------------------------------------------------------------------------- behaviours


class Behaviour:
    """How the server answers a request it misbehaves on."""

    def answer(self, handler: _Handler, honest: Honest) -> None:
        raise NotImplementedError


@dataclass
class Silent(Behaviour):
    """Reads the request, never answers."""

    def answer(self, handler: _Handler, honest: Honest) -> None:
        handler.hold()


@dataclass
class StopsAfter(Behaviour):
    """Sends the honest answer's headers and its first `sent` bytes, then nothing more."""

    sent: int = 10

    def answer(self, handler: _Handler, honest: Honest) -> None:
        status, headers, body = honest()
        handler.head(status, headers, len(body))
        handler.send(body[: self.sent])
        handler.hold()


@dataclass
class Trickle(Behaviour):
    """Sends the honest answer `step` bytes every `every` seconds (a slow link, or a
    server holding the answer open on purpose)."""

    every: float
    step: int = 1

    def answer(self, handler: _Handler, honest: Honest) -> None:
        status, headers, body = honest()
        handler.head(status, headers, len(body))
        for i in range(0, len(body), self.step):
            if not handler.send(body[i : i + self.step]) or handler.server_closing(self.every):
                return


@dataclass
class Endless(Behaviour):
    """An answer whose chunked body never ends: `filler` (valid JSON whitespace by
    default) as fast as the client takes it. `sent` counts the bytes it got out."""

    filler: bytes = b" " * (1 << 20)
    status: int = 200
    sent: int = 0

    def answer(self, handler: _Handler, honest: Honest) -> None:
        handler.head(self.status, {"Content-Type": "application/json"}, None)
        handler.send_chunk(b"[")
        while not handler.server.closing.is_set():
            if not handler.send_chunk(self.filler):
                return
            self.sent += len(self.filler)


@dataclass
class Overflowing(Behaviour):
    """The honest answer's headers and body, chunked, then `filler` without end, as fast
    as the client takes it. `sent` counts the filler's bytes got out."""

    filler: bytes = b"A" * (1 << 20)
    sent: int = 0

    def answer(self, handler: _Handler, honest: Honest) -> None:
        status, headers, body = honest()
        handler.head(status, headers, None)
        handler.send_chunk(body)
        while not handler.server.closing.is_set():
            if not handler.send_chunk(self.filler):
                return
            self.sent += len(self.filler)


@dataclass
class Unfinished(Behaviour):
    """The honest answer's headers and body, chunked, and never the last chunk: then
    silent until the client goes away, or (`close`) the connection closed."""

    close: bool = False

    def answer(self, handler: _Handler, honest: Honest) -> None:
        status, headers, body = honest()
        handler.head(status, headers, None)
        handler.send_chunk(body)
        if not self.close:
            handler.hold()


@dataclass
class Answer(Behaviour):
    """Any answer at all: this status, these headers, this body."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    def answer(self, handler: _Handler, honest: Honest) -> None:
        handler.head(self.status, {**self.headers, "X-Repo-Head": HEAD}, len(self.body))
        handler.send(self.body)


@dataclass
class EndlessPages(Behaviour):
    """A listing whose pages never end: each answer is the honest page (or one without
    entries) with a next cursor, a new one each time (or always `cursor`, a loop)."""

    cursor: str | None = None
    pages: int = 0
    empty: bool = False  # pages without a single entry

    def answer(self, handler: _Handler, honest: Honest) -> None:
        status, headers, body = honest()
        self.pages += 1
        page = {**json.loads(body), "next_cursor": self.cursor or f"c{self.pages}"}
        if self.empty:
            page["entries"] = []
        data = json.dumps(page).encode()
        handler.head(status, headers, len(data))
        handler.send(data)


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --------------------------------------------------------------------------- the server


class HostileServer:
    """`files`: path -> content of the honest repo (directories implied by paths)."""

    def __init__(self, files: Mapping[str, bytes], *, repo: str = "r") -> None:
        self.files = dict(files)
        self.repo = repo
        self.bad_entries: list[Any] = []  # raw entries added to every listing of the root
        self.rules: list[tuple[Callable[[Request], bool], Behaviour]] = []
        self.requests: list[Request] = []
        self._arrived = threading.Condition()
        self.closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def src(self) -> str:
        return f"{self.url}/{self.repo}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    def misbehave(self, select: Callable[[Request], bool], behaviour: Behaviour) -> Behaviour:
        """Answer the requests `select` picks this way (the latest rule that picks wins)."""
        self.rules.insert(0, (select, behaviour))
        return behaviour

    def behave(self) -> None:
        self.rules.clear()

    def wait_for(self, select: Callable[[Request], bool], timeout: float = 15.0) -> Request:
        """The first request `select` picks, waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for r in self.requests:
                    if select(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such request arrived in {timeout:g} s")
                self._arrived.wait(left)

    def arrived(self, request: Request) -> None:
        with self._arrived:
            self.requests.append(request)
            self._arrived.notify_all()

    # ------------------------------------------------------------------ the honest repo

    def entries(self) -> Iterator[dict[str, Any]]:
        dirs: set[str] = set()
        for path in self.files:
            parts = path.split("/")
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        for d in sorted(dirs):
            yield {"path": d, "type": "dir", "size": 0, "mtime": 1.7e9, "mode": 493}
        for path, data in sorted(self.files.items()):
            yield {
                "path": path,
                "type": "file",
                "size": len(data),
                "version": hashlib.sha256(data).hexdigest(),
                "mtime": 1.7e9,
                "mode": 420,
            }

    def tree(self, query: Mapping[str, str]) -> Reply:
        path = query.get("path", "")
        prefix = f"{path}/" if path else ""
        found = [e for e in self.entries() if e["path"].startswith(prefix)]
        if path and not found:
            return _json(404, {"error": {"code": "not_found", "message": f"{path!r}"}})
        if "recursive" not in query:
            found = [e for e in found if "/" not in e["path"][len(prefix) :]]
        listed: list[Any] = [*found, *(self.bad_entries if not path else [])]
        return _json(200, {"head": HEAD, "entries": listed, "next_cursor": None})

    def file(self, method: str, path: str, range_: str | None) -> Reply:
        data = self.files.get(path)
        if data is None:
            return _json(404, {"error": {"code": "not_found", "message": f"{path!r}"}})
        headers = {
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "X-Repomount-Type": "file",
            "X-Repomount-Mode": "644",
            "X-Repo-Head": HEAD,
            "Content-Type": "application/octet-stream",
        }
        status = 200
        if range_ and range_.startswith("bytes=") and data:
            first, _, last = range_[6:].partition("-")
            start, end = int(first), int(last) + 1 if last else len(data)
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            data, status = data[start:end], 206
        return status, headers, data

    def read(self, paths: list[str]) -> Reply:
        parts: list[bytes] = []
        for p in paths:
            data = self.files.get(p)
            if data is None:
                continue
            version = hashlib.sha256(data).hexdigest()
            parts += [
                tarwrite.member_header(p, len(data), pax={tarwrite.VERSION_KEY: version}),
                data,
                tarwrite.padding(len(data)),
            ]
        parts.append(tarwrite.END_OF_ARCHIVE)
        return 200, {"Content-Type": "application/x-tar", "X-Repo-Head": HEAD}, b"".join(parts)

    def honest(self, method: str, request: Request, body: bytes, range_: str | None) -> Reply:
        route = request.route
        if route == "":
            return _json(200, {"name": self.repo, "head": HEAD})
        if route == "/tree":
            return self.tree(request.query)
        if route.startswith("/files/"):
            return self.file(method, route[len("/files/") :], range_)
        if route == "/read" and method == "POST":
            return self.read(json.loads(body)["paths"])
        if route == "/changes":
            wait = float(request.query.get("wait", "0"))
            if "since" in request.query and wait:
                self.closing.wait(wait)
            return _json(200, {"head": HEAD, "changes": []})
        return _json(404, {"error": {"code": "not_found", "message": route}})


def _json(status: int, data: object) -> Reply:
    headers = {"Content-Type": "application/json", "X-Repo-Head": HEAD}
    return status, headers, json.dumps(data).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], owner: HostileServer
    ) -> None:
        super().__init__(address, handler)
        self.owner = owner

    @property
    def closing(self) -> threading.Event:
        return self.owner.closing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # (the stdlib's signature)
        pass  # quiet: the tests read `requests`

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner = self.server.owner
        url = urlsplit(self.path)
        prefix = f"/v1/repos/{owner.repo}"
        path = unquote(url.path)
        route = path[len(prefix) :] if path.startswith(prefix) else path
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        request = Request(self.command, route, query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner.arrived(request)
        range_ = self.headers.get("Range")
        honest = lambda: owner.honest(self.command, request, body, range_)  # noqa: E731
        for select, behaviour in owner.rules:
            if select(request):
                behaviour.answer(self, honest)
                self.close_connection = True
                return
        status, headers, data = honest()
        self.head(status, headers, len(data))
        self.send(data)

    # ------------------------------------------------------------------ writing

    def head(self, status: int, headers: Mapping[str, str], length: int | None) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.flush()

    def send(self, data: bytes) -> bool:
        """Write (unless this is a HEAD); False once the client has gone."""
        if self.command == "HEAD" or not data:
            return True
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            return False
        return True

    def send_chunk(self, data: bytes) -> bool:
        return self.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def server_closing(self, wait: float) -> bool:
        return self.server.closing.wait(wait)

    def hold(self) -> None:
        """Keep the connection open, saying nothing, until the client or the server
        goes away."""
        self.connection.settimeout(0.05)
        while not self.server.closing.is_set():
            try:
                if self.connection.recv(1 << 16) == b"":
                    return  # the client closed its side
            except TimeoutError:
                continue
            except OSError:
                return
