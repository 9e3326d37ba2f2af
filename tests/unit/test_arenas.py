"""The mount daemon asks glibc for two malloc arenas (arenas.py): threads allocating
at once then share them instead of each holding memory of its own."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Eight threads allocate together (a barrier makes them overlap), then malloc_info
# counts the arenas (<heap nr=...>) the process has.
PROBE = textwrap.dedent(
    """
    import ctypes, sys, threading
    from repomount import arenas
    took = arenas.limit_arenas() if sys.argv[1] == "limit" else False
    barrier = threading.Barrier(8)
    def work():
        barrier.wait()
        held = [bytearray(300_000) for _ in range(20)]
        barrier.wait()
        del held
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    out = libc.fopen(sys.argv[2].encode(), b"w")
    libc.malloc_info(0, out)
    libc.fclose(out)
    print(took, open(sys.argv[2]).read().count("<heap nr="))
    """
)


def arenas_after(mode: str, tmp_path: Path, **env: str) -> tuple[str, int]:
    chosen = ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")  # (a limit of the caller's, if any)
    environ = {k: v for k, v in os.environ.items() if k not in chosen} | env
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode, str(tmp_path / "info.xml")],
        capture_output=True,
        text=True,
        env=environ,
        check=True,
        timeout=60,
    ).stdout.split()
    return out[0], int(out[1])


# (The probe asks glibc's malloc_info: elsewhere, musl's or another libc's malloc has
# neither the arenas nor the call.)
glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="malloc arenas are glibc's: elsewhere limit_arenas does nothing",
)


@glibc_only
def test_threads_share_two_arenas(tmp_path: Path) -> None:
    took, limited = arenas_after("limit", tmp_path)
    assert (took, limited) == ("True", 2)
    _, default = arenas_after("default", tmp_path)
    assert default > 2  # (what the limit is for: glibc gives threads their own)


@glibc_only
@pytest.mark.parametrize(
    "env", [{"MALLOC_ARENA_MAX": "3"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=3"}]
)
def test_an_arena_max_in_the_environment_is_left_alone(tmp_path: Path, env: dict[str, str]) -> None:
    took, count = arenas_after("limit", tmp_path, **env)
    assert took == "False"
    assert count == 3  # (not 2: the environment's limit, not ours)
