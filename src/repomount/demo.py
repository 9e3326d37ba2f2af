"""`repomount demo`: an embedded server with a sample repo, mounted in the foreground."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from repomount import daemon
from repomount.mounting import MountRequest, run_mount

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
    serve = ["serve", "--data", str(data_dir), "--port", "0", "--no-auth"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "repomount", *serve],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
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
    proc.kill()
    raise RuntimeError("the embedded server did not start")


def _seed(url: str, repo: str) -> None:
    with httpx.Client(base_url=url) as c:
        c.post("/v1/repos", json={"name": repo}).raise_for_status()
        for path, text in SAMPLE.items():
            c.put(f"/v1/repos/{repo}/files/{path}", content=text.encode()).raise_for_status()


def run_demo(mountpoint: Path) -> int:
    created = False
    if not mountpoint.exists():
        mountpoint.mkdir(parents=True)
        created = True
    why = daemon.check_mountpoint(mountpoint)
    if why:
        print(f"repomount: {why}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="repomount-demo-"))
    os.environ.pop("REPOMOUNT_TOKEN", None)
    proc, url = _start_server(work / "server")
    try:
        _seed(url, "demo")
        src = f"{url}/demo"
        req = MountRequest(
            src=src,
            mountpoint=mountpoint,
            endpoint=None,
            cache_dir=work / "cache",
            state_dir=work / "state",
            metadata_ttl=2.0,
            log_level="WARNING",
        )

        def ready(error: str | None) -> None:
            if error is not None:
                print(f"repomount: {error}", file=sys.stderr, flush=True)
                return
            print(
                f"repomount demo: mounted {src} on {mountpoint}\n\n"
                f"Try, in another terminal:\n"
                f"  ls -lR {mountpoint}\n"
                f"  cat {mountpoint}/src/hello.py\n"
                f"  echo 'hello' > {mountpoint}/new.txt\n"
                f"  vim {mountpoint}/README.md\n"
                f"  curl '{url}/v1/repos/demo/tree?recursive=1'   # what the server holds\n\n"
                f"Press Ctrl-C to unmount and stop the server.",
                flush=True,
            )

        code = run_mount(req, ready)
        print("repomount demo: unmounted, server stopped", flush=True)
        return code
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)
        if created:
            try:
                mountpoint.rmdir()
            except OSError:
                pass
