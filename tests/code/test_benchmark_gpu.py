"""`python -m benchmarks.gpu` at toy scale on the CPU: every path of the GPU check runs, and
the table says the ratios mean nothing here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import write_prepared

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_gpu_benchmark_runs_at_toy_scale_and_prints_its_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(40) % 2
    prepared = write_prepared(
        tmp_path / "prepared", {"train": (images, labels)}, classes=["a", "b"]
    )
    args = ["--depths", "head", "--xla", "off", "--seconds", "0.3", "--prepared", str(prepared)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "TOY: no GPU visible" in out and "dtype policy in use: float32" in out
    row = next(line for line in out.splitlines() if line.startswith("train, head trainable"))
    cells = row.split()
    assert float(cells[3]) > 0  # images/s measured
    assert "n/a (CPU)" in row and " off " in row  # no device memory on CPU; XLA as asked
    assert any(line.startswith("inference") for line in out.splitlines())
    pipe = next(line for line in out.splitlines() if line.startswith("input pipeline"))
    assert "16 px stored -> 32 px on device" in pipe
    ratio = float(pipe.split()[-1])
    assert 0 < ratio < 10
