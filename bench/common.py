"""Shared helpers for the benchmarks: repeated timing and a Markdown table."""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Stat:
    """Median, min and max of repeated measurements of one quantity."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def fmt(self, spec: str = ",.0f") -> str:
        if len(self.values) == 1:
            return format(self.values[0], spec)
        lo, hi = min(self.values), max(self.values)
        return f"{self.median:{spec}} ({lo:{spec}}–{hi:{spec}})"


def repeat(fn: Callable[[], float], repeats: int) -> Stat:
    """Call ``fn`` ``repeats`` times; each call returns one measurement."""
    return Stat([fn() for _ in range(repeats)])


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """One line describing this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        mem = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}, {platform.system()}"


def out_problem(path: Path) -> str | None:
    """Why the results file ``path`` could not be written, or None. Probes for real (a temporary
    file in the nearest existing folder; nothing is left behind)."""
    if path.is_dir():
        return f"{path} is a folder; give a file name such as {path / 'results.md'}"
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, so {path.parent} cannot be created"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"cannot write in {folder} ({exc.strerror or exc})"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return None
