"""What the workloads of one network setting share: the server, the link, the mounts, the
data, and the results they add."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import procs, reqlog
from .api import Api, Item
from .data import Tree
from .procs import Mount, Server


@dataclass
class Result:
    workload: str  # W1, R1, ... (what --only names)
    figure: str  # what the row measures
    value: float | None  # None: failed
    unit: str
    seconds: float | None = None
    requests: reqlog.Counts | None = None
    rss_mib: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "workload": self.workload,
            "figure": self.figure,
            "value": self.value,
            "unit": self.unit,
            "seconds": self.seconds,
            "rss_mib": self.rss_mib,
            "requests": self.requests.as_dict() if self.requests else None,
            "extra": self.extra,
        }


@dataclass
class Setting:
    """One network setting: loopback, or the server behind an emulated RTT."""

    rtt_ms: float
    method: str  # "loopback" or how the delay is made
    probe: dict[str, float] = field(default_factory=dict)
    probe_end: dict[str, float] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return "loopback" if self.rtt_ms == 0 else f"{self.rtt_ms:g} ms RTT ({self.method})"


class Ctx:
    def __init__(
        self,
        args: argparse.Namespace,
        work: Path,
        data: Path,
        tree: Tree,
        server: Server,
        link_url: str,
        setting: Setting,
    ) -> None:
        self.args = args
        self.work = work
        self.data = data
        self.tree = tree
        self.server = server
        self.token = server.token
        self.api = Api(server.url, server.token)  # direct: seeding and checks, untimed
        self.link_url = link_url  # what the mounts and curl use (through the link)
        self.setting = setting
        self.mounts: list[Mount] = []
        self.n = 0
        self.repos: set[str] = set()
        self.w1_seeded = False
        self.mount_opts: list[str] = args.mount_opt or []

    # --- results ---

    def add(
        self, workload: str, figure: str, value: float | None, unit: str, **kw: object
    ) -> Result:
        r = Result(workload, figure, value, unit, **kw)  # type: ignore[arg-type]
        self.setting.results.append(r)
        return r

    def fail(self, workload: str, why: str) -> None:
        procs.log(f"{workload} FAILED: {why}")
        self.add(workload, "FAILED", None, "", extra={"error": why[-600:]})

    def mark(self) -> int:
        return self.server.mark()

    def counts(self, start: int, end: int | None = None) -> reqlog.Counts:
        return reqlog.count(self.server.lines(start, end))

    # --- repos and mounts ---

    def repo(self, name: str) -> str:
        if name not in self.repos:
            self.api.create_repo(name)
            self.repos.add(name)
        return name

    def ensure_w1(self) -> None:
        """w1/ on the server, for workloads that read it when W1 did not run."""
        if self.w1_seeded:
            return
        items = [Item(f"w1/{p}", local=self.tree.root / p) for p, _, _ in self.tree.files]
        self.api.seed(self.repo("bench"), items)
        self.w1_seeded = True

    def mount(self, repo: str, *, cold: bool, extra: list[str] | None = None) -> Mount:
        """A new daemon with empty cache and state directories. Cold: every other mount
        is unmounted first and the kernel's caches dropped."""
        if cold:
            self.unmount_all()
            if not procs.drop_caches():
                self.note("could not drop the page cache (not root?): cold reads are warm")
        self.n += 1
        m = Mount(
            f"{self.link_url}/{repo}",
            self.work / "mnt" / f"{repo}-{self.n}",
            self.work / "mounts" / str(self.n),
            self.token,
            self.mount_opts + (extra or []),
        )
        try:
            m.start()
        except RuntimeError as e:  # e.g. caught in the middle of someone's edit: once more
            procs.log(f"mount failed, retrying in 10 s: {str(e)[-300:]}")
            time.sleep(10)
            m.unmount()
            m.start()
        self.mounts.append(m)
        return m

    def unmount(self, m: Mount) -> None:
        m.unmount()
        if m in self.mounts:
            self.mounts.remove(m)

    def unmount_all(self) -> None:
        for m in list(self.mounts):
            self.unmount(m)

    def note(self, text: str) -> None:
        if text not in self.setting.notes:
            self.setting.notes.append(text)
            procs.log(text)

    def close(self) -> None:
        self.unmount_all()
        self.api.close()
