"""`repomount demo`: an embedded server with a sample repo, mounted in the foreground.

Ctrl-C stops the mount first (it sends what is pending, showing how that goes), then the
server, which runs in a session of its own so the terminal's Ctrl-C never reaches it.
The demo's directory (the server's store, the mount's journal) is removed only once
everything reached the server; otherwise it is kept, and the demo says how to go on.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from repomount import daemon
from repomount.fuse.mount import StopProgress
from repomount.mounting import MountRequest, run_mount
from repomount.options import DEFAULTS

SAMPLE: dict[str, str] = {
    "README.md": "# demo\n\nA sample repo served by `repomount serve` and mounted with repomount.\n"
    "Edit anything here with any program; saves go to the server as conditional writes.\n",
    "src/hello.py": 'def main() -> None:\n    print("hello from a mounted repo")\n\n\n'
    'if __name__ == "__main__":\n    main()\n',
    "src/util/strings.py": "def shout(s: str) -> str:\n    return s.upper() + '!'\n",
    "docs/notes.txt": "Try: ls -lR, cat, vim, sed -i, cp, mv, rm, mkdir.\n",
    "data/numbers.csv": "n,square\n" + "".join(f"{n},{n * n}\n" for n in range(1, 21)),
}


def _start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    # --no-auth: a throwaway server on loopback only, so curl works without a token.
    # A session of its own: Ctrl-C on the terminal reaches the demo, which stops the
    # server only once the mount sent what is pending.
    serve = ["serve", "--data", str(data_dir), "--port", "0", "--no-auth"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "repomount", *serve],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        if not line and proc.poll() is not None:
            break
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            # Keep draining the access log so the server never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, m.group(1).rstrip("/")
    _stop_server(proc)
    raise RuntimeError("the embedded server did not start")


def _stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _seed(url: str, repo: str) -> None:
    with httpx.Client(base_url=url) as c:
        created = c.post("/v1/repos", json={"name": repo})
        if created.status_code == 409:
            return  # a demo directory kept from before (--dir): its repo as it was left
        created.raise_for_status()
        for path, text in SAMPLE.items():
            c.put(f"/v1/repos/{repo}/files/{path}", content=text.encode()).raise_for_status()


def _say(text: str, *, end: str = "\n") -> None:
    try:
        print(text, end=end, file=sys.stderr, flush=True)
    except OSError:
        pass  # the terminal is gone (SIGHUP): the stop goes on without it


class _StopView:
    """Shows the mount's stop on the terminal and remembers how it ended."""

    def __init__(self) -> None:
        self.started = False
        self.left: int | None = None  # changes not sent, once the stop is over
        self._live = sys.stderr.isatty()

    def show(self, p: StopProgress) -> None:
        if p.done:
            self.left = p.pending
            if self.started and self._live:
                _say("")
            return
        if not self.started:
            self.started = True
            what = f"sending {p.pending} change(s) to the server" if p.pending else "unmounting"
            _say(f"repomount demo: stopping: {what} (Ctrl-C again: stop waiting)")
        if self._live and p.pending:
            _say(
                f"\rrepomount demo: {p.pending} change(s) left to send, "
                f"waiting at most {p.seconds_left:.0f} s more   ",
                end="",
            )


def _make_dirs(path: Path) -> list[Path]:
    """`mkdir -p path`: the directories made, deepest first (for _remove)."""
    missing: list[Path] = []
    while not os.path.lexists(path):
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        d.mkdir()
    return missing


def _remove(made: list[Path]) -> None:
    """Remove what _make_dirs made, if still empty: a failed demo leaves nothing."""
    for d in made:
        try:
            d.rmdir()
        except OSError:
            return


def run_demo(
    mountpoint: Path, *, work_dir: Path | None = None, drain_timeout: float = DEFAULTS.drain_timeout
) -> int:
    if work_dir is not None and work_dir.exists() and not work_dir.is_dir():
        _say(f"repomount: --dir {work_dir} is not a directory")
        return 2
    if work_dir is not None and work_dir.is_relative_to(mountpoint):
        _say(f"repomount: --dir {work_dir} is inside the mountpoint {mountpoint}")
        return 2
    try:
        made = _make_dirs(mountpoint)
    except OSError as e:
        _say(f"repomount: cannot make the mountpoint {mountpoint}: {e.strerror}")
        return 2
    why = daemon.check_mountpoint(mountpoint)
    if why:
        _remove(made)
        _say(f"repomount: {why}")
        return 2
    try:
        work = work_dir or Path(tempfile.mkdtemp(prefix="repomount-demo-"))
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove(made)
        _say(f"repomount: cannot make the demo's directory: {e.filename}: {e.strerror}")
        return 2
    os.environ.pop("REPOMOUNT_TOKEN", None)
    view = _StopView()
    mounted = False
    code = 1
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc, url = _start_server(work / "server")
        _seed(url, "demo")
        src = f"{url}/demo"
        req = MountRequest(
            src=src,
            mountpoint=mountpoint,
            cache_dir=work / "cache",
            state_dir=work / "state",
            options=DEFAULTS.updated(
                {"metadata_ttl": 2.0, "log_level": "WARNING", "drain_timeout": drain_timeout}
            ),
            on_stop=view.show,
        )

        def ready(error: str | None) -> None:
            nonlocal mounted
            if error is not None:
                print(f"repomount: {error}", file=sys.stderr, flush=True)
                return
            mounted = True
            print(
                f"repomount demo: mounted {src} on {mountpoint}\n\n"
                f"Try, in another terminal:\n"
                f"  ls -lR {mountpoint}\n"
                f"  cat {mountpoint}/src/hello.py\n"
                f"  echo 'hello' > {mountpoint}/new.txt\n"
                f"  vim {mountpoint}/README.md\n"
                f"  curl '{url}/v1/repos/demo/tree?recursive=1'   # what the server holds\n\n"
                f"Press Ctrl-C to stop: pending changes are sent, then the server stops.",
                flush=True,
            )

        code = run_mount(req, ready)
    except (RuntimeError, httpx.HTTPError) as e:
        _say(f"repomount: the demo server failed: {e}")
    except KeyboardInterrupt:
        code = 130  # before the mount was up, or after it: the journal is on disk
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a few seconds more, to finish
        if proc is not None:
            _stop_server(proc)
        _remove(made)
    return _leave(work, kept=work_dir is not None, mounted=mounted, left=view.left, code=code)


def _leave(work: Path, *, kept: bool, mounted: bool, left: int | None, code: int) -> int:
    """Remove the demo's directory, or keep it and say why; the exit code."""
    if mounted and left != 0:
        what = "some changes" if left is None else f"{left} change(s)"
        _say(
            f"repomount demo: {what} did not reach the server; they are kept, with the "
            f"server's data, in {work}. To send them, run: repomount demo --dir {work}"
        )
        return code or 1
    if mounted:
        _say("repomount demo: every change reached the server; unmounted, server stopped")
    if kept:
        _say(f"repomount demo: the server's data and the mount's state stay in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return code
