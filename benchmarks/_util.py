"""Helpers shared by the benchmark modules: timed child processes with their peak RSS."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_measured(
    args: list[str], *, cwd: Path | None = None, env: dict | None = None
) -> tuple[float, float]:
    """Run `python -m module args...` in a child; returns (wall seconds, peak RSS in MiB).

    The peak is the child's own VmHWM (see benchmarks/_peak.py for why not rusage).
    """
    if args[:1] != ["-m"]:
        raise ValueError("run_measured runs modules: ['-m', 'tasks.x', ...]")
    peak = Path(tempfile.mkstemp(suffix=".peak")[1])
    cmd = [sys.executable, "-m", "benchmarks._peak", str(peak), *args]
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a chatty child never blocks
        start = time.perf_counter()
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            cmd,
            cwd=cwd or ROOT,
            env={**os.environ, "PYTHONPATH": path, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
        proc.wait()
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {err.read()[-2000:]}")
    kib = int(peak.read_text() or 0)
    peak.unlink(missing_ok=True)
    return wall, kib / 1024


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def alternating(
    runs: dict[str, Callable[[], float]], *, repeats: int = 5, warmup: int = 1
) -> dict[str, list[float]]:
    """Each run's samples over `repeats` rounds, the order alternating (AB, BA, AB, ...).

    Every callable returns one measurement (seconds, or a rate); `warmup` rounds first call
    each one untimed, so tracing and compiling of the measured function stay out of the
    samples. Alternating keeps a slow phase of a shared machine from landing on one side.
    """
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names if i % 2 == 0 else reversed(names):
            samples[name].append(runs[name]())
    return samples


def median_spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """`median (min-max)` of the samples."""
    mid, low, high = (fmt.format(v) for v in (statistics.median(values), min(values), max(values)))
    return f"{mid} ({low}-{high})"


def ratio_samples(a: list[float], b: list[float]) -> list[float]:
    """Per-round ratios a[i] / b[i]: each round measured both sides back to back."""
    return [x / y for x, y in zip(a, b, strict=True)]
