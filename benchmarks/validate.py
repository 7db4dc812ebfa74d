"""Validating a CIFAR-10-sized prepared dataset: 60,000 32x32 images, 10 classes.

`python -m tasks.validate` runs in a child process (GX import included, as a user runs it),
once on clean data and once with faults planted (1% of test leaked from train, 100 constant
images, within-split copies) and made warnings, so every failing expectation also collects
its examples. Beside them: importing great_expectations alone, the fixed cost of any run.
Target: < 60 s and < 1.5 GiB peak RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._util import ROOT, table

LIMIT_S, LIMIT_MIB = 60, 1536
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPLIT_SIZES = {"train": 45_000, "val": 5_000, "test": 10_000}


def cifar_sized(seed: int = 0, faults: bool = False) -> dict:
    """split -> (images (N, 32, 32, 3) uint8, labels): noise, classes in equal shares."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in SPLIT_SIZES.items():
        labels = np.arange(n) % len(CLASSES)
        out[split] = (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), labels)
    if faults:
        train, test = out["train"][0], out["test"][0]
        test[:100] = train[:100]  # 1% of test leaked from train
        train[1000:1100] = 0  # 100 all-black images
        train[2001:2050] = train[2000]  # copies inside one split
    return out


def measured(args: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of `python args...` in a child process.

    CPU time (user + system, from wait4) is shown beside wall time because this machine's
    cores are shared: wall time grows with the others' load, CPU time hardly does.
    """
    cmd = [sys.executable, *args]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    from tests.helpers import params_yaml, write_prepared

    env = {"GX_ANALYTICS_ENABLED": "False"}
    wall, cpu, rss = measured(["-c", "import great_expectations"], env)
    rows = [
        [
            "import great_expectations (fixed cost)",
            "-",
            f"{wall:.1f}",
            f"{cpu:.1f}",
            "-",
            "-",
            f"{rss:.0f}",
            "-",
            "-",
        ]
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for faults in (False, True):
            name = "faults" if faults else "clean"
            prepared = write_prepared(tmp / name, cifar_sized(faults=faults), CLASSES)
            out = tmp / f"reports-{name}"
            lenient = {"leakage_across_splits": "warning", "not_constant": "warning"}
            params = tmp / f"params-{name}.yaml"
            params.write_text(
                params_yaml(
                    {
                        "data": {"prepared_dir": str(prepared)},
                        "validate": {
                            "expectations_dir": str(ROOT / "expectations"),
                            "out_dir": str(out),
                            "severity": lenient if faults else {},
                        },
                    }
                )
            )
            wall, cpu, rss = measured(["-m", "tasks.validate", "--params", str(params)], env)
            summary = json.loads((out / "summary.json").read_text())
            ok = wall < LIMIT_S and rss < LIMIT_MIB
            rows.append(
                [
                    f"validate, {name} ({len(summary['warnings'])} failing)",
                    "60,000",
                    f"{wall:.1f}",
                    f"{cpu:.1f}",
                    f"{summary['seconds']['tables']:.1f}",
                    f"{summary['seconds']['suites']:.1f}",
                    f"{rss:.0f}",
                    f"{LIMIT_S} s / {LIMIT_MIB}",
                    "yes" if ok else "NO",
                ]
            )
    print(
        table(
            [
                "run",
                "images",
                "wall s",
                "CPU s",
                "tables s",
                "GX s",
                "peak RSS MiB",
                "limit",
                "within",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
