"""repomount benchmark: small-file copy, large-file read/write, listing, memory.

Prints one line per figure. Runs a server and mounts in temporary directories on this
machine (loopback only) and cleans up after itself.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.mount import MountProc
from support.server import ServerProc


def figure(name: str, value: float, unit: str) -> None:
    print(f"{name:<44} {value:>10.2f} {unit}", flush=True)


def bench(work: Path, files: int, big_mb: int) -> None:
    server = ServerProc(work / "server")
    server.start()
    mounts: list[MountProc] = []
    try:
        server.create_repo("bench")

        def mount(name: str) -> MountProc:
            m = MountProc(f"{server.url}/bench", work / f"mnt-{name}", work_dir=work / name,
                          token=server.token, repo="bench")  # fmt: skip
            m.start()
            mounts.append(m)
            return m

        m = mount("a")
        src = work / "src"
        for i in range(files):
            p = src / f"d{i % 20}" / f"f{i}.txt"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(f"file {i}\n".encode() * 20)
        mark = server.mark()
        t0 = time.monotonic()
        subprocess.run(["cp", "-r", str(src), str(m.path / "tree")], check=True)
        t_cp = time.monotonic() - t0
        m.sync(timeout=600)
        t_sync = time.monotonic() - t0
        writes = [r for r in server.requests(since=mark) if r.method in ("PUT", "POST", "DELETE")]
        figure(f"cp -r {files} small files (close returns)", t_cp, "s")
        figure(f"cp -r {files} small files, until on the server", t_sync, "s")
        figure("  files per second, end to end", files / t_sync, "files/s")
        figure("  write requests per 100 files", 100 * len(writes) / files, "requests")

        size = big_mb << 20
        block = hashlib.sha256(b"bench").digest() * (1 << 15)
        t0 = time.monotonic()
        with (m.path / "big.bin").open("wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
        t_w = time.monotonic() - t0
        m.sync(timeout=600)
        t_ws = time.monotonic() - t0
        figure(f"write {big_mb} MiB (close returns)", big_mb / t_w, "MiB/s")
        figure(f"write {big_mb} MiB, until on the server", big_mb / t_ws, "MiB/s")

        m2 = mount("b")  # a cold cache
        t0 = time.monotonic()
        subprocess.run(["ls", "-lR", str(m2.path / "tree")], check=True, capture_output=True)
        figure(f"ls -lR of {files} files, cold", time.monotonic() - t0, "s")
        for label in ("cold", "warm"):
            t0 = time.monotonic()
            with (m2.path / "big.bin").open("rb") as f:
                while f.read(1 << 20):
                    pass
            figure(f"read {big_mb} MiB, {label}", big_mb / (time.monotonic() - t0), "MiB/s")
        hold = ["--flush-delay", "3600", "--max-flush-window", "3600"]  # until `sync`
        held = MountProc(f"{server.url}/bench", work / "mnt-held", work_dir=work / "held",
                         token=server.token, repo="bench", extra_args=hold)  # fmt: skip
        held.start()
        mounts.append(held)
        settle_stat_latency(held, 10_000)
        fsync_latency(m, 200)
        for mp, label in ((m, "writer"), (m2, "reader")):
            figure(f"peak RSS of the mount ({label})", mp.rss_peak_kib() / 1024, "MiB")
    finally:
        for mp in mounts:
            mp.stop()
        server.stop()


def settle_stat_latency(m: MountProc, count: int) -> None:
    """`count` files written and closed on a mount that holds its changes, then `stat`
    (of a file, and of the busy directory) timed every 10 ms while `sync` settles them
    all: the journal, coalescer and flusher must not stall requests."""
    d = m.path / "settle"
    d.mkdir()
    t0 = time.monotonic()
    for i in range(count):
        (d / f"s{i}").write_bytes(b"x")
    figure(f"write+close {count} files (held)", time.monotonic() - t0, "s")
    probe = m.path / "big.bin"
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for target in (probe, d):
                t = time.monotonic()
                os.stat(target)
                samples.append(time.monotonic() - t)
            time.sleep(0.01)

    th = threading.Thread(target=sample)
    th.start()
    t0 = time.monotonic()
    m.sync(timeout=900)
    done.set()
    th.join()
    figure(f"  until {count} changes are on the server", time.monotonic() - t0, "s")
    samples.sort()
    figure("  stat while they settle, median", 1000 * samples[len(samples) // 2], "ms")
    figure("  stat while they settle, max", 1000 * samples[-1], "ms")


def fsync_latency(m: MountProc, rounds: int) -> None:
    """E1: open, write 1 KiB, fsync (until the server has it), close; one file."""
    path = m.path / "e1.txt"
    times = []
    for i in range(rounds):
        t = time.monotonic()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, bytes([65 + i % 26]) * 1024)
        os.fsync(fd)
        os.close(fd)
        times.append(time.monotonic() - t)
    times.sort()
    figure("write 1 KiB + fsync + close, median", 1000 * times[len(times) // 2], "ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--big-mb", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="repomount-bench-") as tmp:
        bench(Path(tmp), args.files, args.big_mb)


if __name__ == "__main__":
    main()
