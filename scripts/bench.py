"""repomount benchmark: the workloads W1, R1, R2, M1, E1, L1 (README, "Benchmark") and a
scale run, on loopback and behind an emulated round-trip time, with the server's request
counts per workload and the mount daemon's peak RSS.

    scripts/bench                        # loopback, every workload
    scripts/bench --rtt 0,20             # loopback, then 20 ms RTT
    scripts/bench --only W1,E1 --rtt 20
    scripts/bench --scale 100000 --only SCALE

Each network setting gets its own server (`repomount serve`, a fresh store, a random
token) and prints one table. `--rtt MS` puts scripts/delayproxy.py between the mounts (and
curl) and the server: a delay line adding MS/2 ms each way (this kernel has no netem).
Results, logs and the cached data set go under /tmp/bench-repomount (`--out`).
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import api, data, large, procs, report, small
from benchlib.context import Ctx, Setting

WORKLOADS = ("W1", "R1", "R2", "M1", "E1", "S1", "L1", "SCALE")


def netem_status() -> str:
    """Whether tc's netem qdisc works here, tried on the loopback of a throwaway namespace."""
    ns = f"repomount-bench-probe-{os.getpid()}"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "no ip/tc"
    add = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True, check=False)
    if add.returncode != 0:
        return f"no network namespace: {add.stderr.strip()}"
    try:
        cmd = [
            "ip",
            "netns",
            "exec",
            ns,
            "tc",
            "qdisc",
            "add",
            "dev",
            "lo",
            "root",
            "netem",
            "delay",
            "1ms",
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return "works" if r.returncode == 0 else (r.stderr.strip() or f"exit {r.returncode}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def plan(args: argparse.Namespace) -> list[tuple[str, Callable[[Ctx], None]]]:
    only = set(args.only)
    steps: list[tuple[str, Callable[[Ctx], None]]] = []
    if "W1" in only:
        steps.append(("W1", small.w1))
    if only & {"R1", "R2"}:
        steps.append(("R1", small.r1_r2))
    if "M1" in only:
        steps.append(("M1", small.m1))
    if "E1" in only:
        steps.append(("E1", small.e1))
    if "S1" in only:
        steps.append(("S1", small.settle))
    if "L1" in only:
        steps.append(("L1", large.l1))
    if args.scale and "SCALE" in only:
        steps.append(("SCALE", lambda ctx: large.scale(ctx, args.scale)))
    return steps


def run_setting(args: argparse.Namespace, rtt: float, run_dir: Path, tree: data.Tree) -> Setting:
    work = run_dir / f"rtt{rtt:g}"
    work.mkdir(parents=True)
    token = secrets.token_hex(16)
    server = procs.Server(work / "server-data", token)
    proxy: procs.DelayProxy | None = None
    setting = Setting(rtt, "loopback")
    ctx: Ctx | None = None
    t0 = time.monotonic()
    try:
        server.start()
        link = server.url
        if rtt > 0:
            netem = netem_status()
            proxy = procs.DelayProxy(server.port, rtt, work / "delayproxy.log")
            proxy.start()
            link = f"http://127.0.0.1:{proxy.port}"
            setting.method = "delayproxy"
            setting.notes.append(
                f"netem: {netem}; the delay is scripts/delayproxy.py "
                f"({rtt / 2:g} ms each way, per chunk, in order)"
            )
        procs.log(f"setting: {setting.label}; server {server.url}, mounts and curl use {link}")
        load = Path("/proc/loadavg").read_text().split()[:3]
        setting.probe = api.probe_rtt(link, token)
        procs.log(f"RTT probe: {setting.probe}")
        ctx = Ctx(args, work, Path(args.out) / "data", tree, server, link, setting)
        printed = 0
        for name, step in plan(args):
            procs.log(f"--- {name} ({setting.label})")
            try:
                step(ctx)
            except Exception as e:  # one workload failing must not lose the others' figures
                ctx.fail(name, f"{type(e).__name__}: {e}")
                ctx.unmount_all()
            for r in setting.results[printed:]:
                print(report.row(r), flush=True)
            printed = len(setting.results)
        setting.probe_end = api.probe_rtt(link, token)
        end = Path("/proc/loadavg").read_text().split()[:3]
        setting.notes.append(
            f"load average {' '.join(load)} at the start, {' '.join(end)} at the end"
        )
        if proxy is not None and proxy.proc is not None:
            cpu = procs.cpu_seconds(proxy.proc.pid)
            setting.notes.append(f"the delay proxy used {cpu:.1f} s of CPU")
    finally:
        if ctx is not None:
            ctx.close()
        if proxy is not None:
            proxy.stop()
        server.stop()
        setting.seconds = time.monotonic() - t0
        if not args.keep:
            cleanup(work)
    return setting


def cleanup(work: Path) -> None:
    """The store and the mounts' caches go; logs stay. Mount points are only rmdir'ed."""
    for name in ("server-data", "mounts"):
        shutil.rmtree(work / name, ignore_errors=True)
    mnt = work / "mnt"
    if mnt.is_dir():
        for d in mnt.iterdir():
            if not procs.is_mounted(d):
                try:
                    d.rmdir()
                except OSError as e:
                    procs.log(f"left {d}: {e}")


def describe(args: argparse.Namespace, tree: data.Tree) -> dict[str, object]:
    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=procs.ROOT, capture_output=True, text=True, check=False)
        return r.stdout.strip()

    return {
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty_files_in_src": len(git("status", "--porcelain", "src").splitlines()),
        "machine": f"{platform.node()} {platform.release()} {os.cpu_count()} cpus",
        "python": sys.version.split()[0],
        "data": tree.describe(),
        "options": {k: v for k, v in vars(args).items()},
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--files", type=int, default=2000, help="W1 tree: at least this many files")
    ap.add_argument("--big-mb", type=int, default=256, help="L1 file size, MiB")
    ap.add_argument("--rtt", default="0", help="round-trip times in ms, e.g. 0,20 (0 = loopback)")
    ap.add_argument("--only", help="workloads, e.g. W1,E1 (default: all; SCALE with --scale)")
    ap.add_argument("--scale", type=int, default=0, metavar="N", help="also the N-file scale run")
    ap.add_argument("--e1-rounds", type=int, default=200)
    ap.add_argument("--settle-files", type=int, default=10_000, help="S1: held changes")
    ap.add_argument(
        "--mount-opt",
        action="append",
        metavar="ARG",
        help="an extra argument for `repomount mount` (repeatable)",
    )
    ap.add_argument("--out", default="/tmp/bench-repomount", help="results, logs, data set")
    ap.add_argument("--keep", action="store_true", help="keep the server stores and caches")
    args = ap.parse_args(argv)
    args.rtt = [float(x) for x in args.rtt.split(",") if x.strip()]
    only = args.only or ",".join(WORKLOADS)
    args.only = [w.strip().upper() for w in only.split(",") if w.strip()]
    bad = set(args.only) - set(WORKLOADS)
    if bad:
        ap.error(f"unknown workloads {sorted(bad)}; known: {','.join(WORKLOADS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if os.geteuid() != 0:
        procs.log("not root: caches cannot be dropped, so 'cold' reads may be warm")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    out = Path(args.out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = out / f"run-{stamp}"
    tree = data.w1_tree(out / "data", args.files)
    procs.log(f"W1 data: {tree.describe()}")
    meta = describe(args, tree)  # the commit and working tree the run starts from
    settings: list[Setting] = []
    try:
        for rtt in args.rtt:
            settings.append(run_setting(args, rtt, run_dir, tree))
    finally:
        procs.stop_all()
        if settings:
            paths = report.write(out, stamp, meta, settings)
            print()
            print((out / f"results-{stamp}.txt").read_text())
            print("written: " + ", ".join(map(str, paths)) + f"; logs in {run_dir}")
    return 0 if all(r.value is not None for s in settings for r in s.results) else 1


if __name__ == "__main__":
    sys.exit(main())
