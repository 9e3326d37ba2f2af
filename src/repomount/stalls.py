"""Report trio task steps that ran too long: while one runs, no FUSE request is answered.

Off by default. `REPOMOUNT_LOG_STALLS_MS=20` logs (at WARNING) every step of a task that
held the trio thread longer than 20 ms, with where the step began and ended; a cheap way
to find what makes `ls` or `stat` on the mount stall.
"""

from __future__ import annotations

import logging
import os
import time
from types import CoroutineType, FrameType
from typing import Any

import trio

log = logging.getLogger(__name__)
ENV = "REPOMOUNT_LOG_STALLS_MS"


class StallReporter(trio.abc.Instrument):
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._started = 0.0
        self._began_at = ""

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started = time.perf_counter()
        self._began_at = _where(task)

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        took = time.perf_counter() - self._started
        if self._started and took > self.threshold:
            log.warning(
                "a step of %s held the loop %.0f ms: from %s to %s",
                task.name, 1000 * took, self._began_at, _where(task),
            )  # fmt: skip
        self._started = 0.0


def _where(task: trio.lowlevel.Task) -> str:
    """The innermost of our own frames the task is suspended in."""
    frames: list[FrameType] = []
    coro: Any = task.coro
    while isinstance(coro, CoroutineType) or hasattr(coro, "gi_frame"):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    ours = [f for f in frames if "repomount" in f.f_code.co_filename] or frames
    if not ours:
        return "?"
    f = ours[-1]
    return f"{f.f_code.co_qualname}:{f.f_lineno}"


def install_from_env() -> None:
    """Call inside trio.run: adds the instrument if REPOMOUNT_LOG_STALLS_MS is set."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return
    try:
        ms = float(value)
    except ValueError:
        log.warning("%s=%r is not a number of milliseconds; not reporting stalls", ENV, value)
        return
    trio.lowlevel.add_instrument(StallReporter(ms / 1000))
