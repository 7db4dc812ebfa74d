"""Helpers shared by the benchmark modules: timed child processes with their peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_measured(args: list[str], *, cwd: Path | None = None, env: dict | None = None
                 ) -> tuple[float, float]:
    """Run `python args...` in a child; returns (wall seconds, peak RSS in MiB) of that child.

    Peak RSS is wait4's rusage of exactly that child (not of the benchmark process).
    """
    cmd = [sys.executable, *args]
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a chatty child never blocks
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd or ROOT, env={**os.environ, **(env or {})},
                                stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): "
                               f"{err.read()[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def table(headers: list[str], rows: list[list]) -> str:
    cells = [headers, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
