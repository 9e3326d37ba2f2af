"""The data sets, built once and cached under the results directory.

W1: a selection of the Python standard library, chosen by a fixed rule so the same Python
gives the same tree (the rule the workloads are defined by): its top-level entries in byte order
(with `test/` split into its children), whole entries taken until there are at least
`files` files; `site-packages`, `lib-dynload`, `config-*`, `ensurepip` at the top,
`__pycache__`, symlinks and compiled or binary files (.pyc .so .a .whl .exe) anywhere left
out. From CPython 3.11.7 that is 2,004 files, 30.9 MiB in 137 directories (126 of which
hold files). Without a standard library on disk, a generated tree of about that shape
stands in. L1: incompressible bytes from a seeded PRNG.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

SKIP_TOP = {"__pycache__", "site-packages", "lib-dynload", "ensurepip"}
SKIP_SUFFIXES = (".pyc", ".so", ".a", ".whl", ".exe")
RULE = "stdlib-v2"


@dataclass
class Tree:
    root: Path
    files: list[tuple[str, int, str]]  # (relative path, size, sha256), sorted by path
    dirs: int
    source: str

    @property
    def bytes(self) -> int:
        return sum(size for _, size, _ in self.files)

    def describe(self) -> str:
        return (
            f"{len(self.files)} files, {self.bytes / 2**20:.1f} MiB, {self.dirs} dirs "
            f"({self.source})"
        )


def _skipped(path: Path) -> bool:
    name = path.name
    if path.is_symlink() or name == "__pycache__":
        return True
    return path.is_file() and name.endswith(SKIP_SUFFIXES)


def _walk(path: Path) -> list[Path]:
    """The files under `path` (or `path` itself), excluded ones left out."""
    if _skipped(path):
        return []
    if path.is_file():
        return [path]
    found: list[Path] = []
    for child in sorted(path.iterdir(), key=lambda p: os.fsencode(p.name)):
        found += _walk(child)
    return found


def _stdlib_selection(pylib: Path, want: int) -> list[tuple[Path, str]]:
    units: list[Path] = []
    for entry in sorted(pylib.iterdir(), key=lambda p: os.fsencode(p.name)):
        if entry.name in SKIP_TOP or entry.name.startswith("config-"):
            continue
        if entry.name == "test" and entry.is_dir() and not entry.is_symlink():
            units += sorted(entry.iterdir(), key=lambda p: os.fsencode(p.name))
        else:
            units.append(entry)
    chosen: list[tuple[Path, str]] = []
    for unit in units:
        if len(chosen) >= want:
            break
        chosen += [(f, f.relative_to(pylib).as_posix()) for f in _walk(unit)]
    return chosen


def _generated(dest: Path, want: int) -> None:
    """~2,000 files of text-like content in 126 directories, ~16 KiB on average."""
    rng = random.Random(12)
    words = [f"w{i:03}" for i in range(400)]
    for i in range(want):
        top, sub = i % 18, (i // 18) % 7
        path = dest / f"pkg{top:02}" / f"mod{sub}" / f"file{i:05}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = int(rng.lognormvariate(8.8, 1.2)) + 64
        line = " ".join(rng.choice(words) for _ in range(12)) + "\n"
        path.write_bytes((line * (size // len(line) + 1)).encode()[:size])


def w1_tree(base: Path, want: int) -> Tree:
    """The W1 tree under `base`, built unless a complete one is there."""
    pylib = Path(os.environ.get("BENCH_PYLIB") or sysconfig.get_paths()["stdlib"])
    dest = base / f"w1-{want}"
    manifest = base / f"w1-{want}.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        if meta["rule"] == RULE and meta["pylib"] == str(pylib):
            files = [(p, int(size), sha) for p, size, sha in meta["files"]]
            return Tree(dest, files, meta["dirs"], meta["source"])
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if (pylib / "os.py").exists():
        for src, rel in _stdlib_selection(pylib, want):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / rel)
        source = f"standard library of Python at {pylib}"
    else:
        _generated(dest, want)
        source = "generated"
    files = []
    dirs = 0
    for dirpath, dirnames, filenames in os.walk(dest):
        dirs += len(dirnames)
        for name in filenames:
            p = Path(dirpath) / name
            data = p.read_bytes()
            files.append(
                (p.relative_to(dest).as_posix(), len(data), hashlib.sha256(data).hexdigest())
            )
    files.sort()
    meta = {"rule": RULE, "pylib": str(pylib), "files": files, "dirs": dirs, "source": source}
    manifest.write_text(json.dumps(meta))
    return Tree(dest, files, dirs, source)


def prng_file(base: Path, name: str, mib: int, seed: int) -> Path:
    """`mib` MiB of incompressible bytes from a seeded PRNG (cached)."""
    path = base / f"{name}-{mib}m-s{seed}.bin"
    if path.exists() and path.stat().st_size == mib << 20:
        return path
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for _ in range(mib):
            f.write(rng.randbytes(1 << 20))
    tmp.rename(path)
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
