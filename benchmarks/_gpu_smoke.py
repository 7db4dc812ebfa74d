"""`make gpu-smoke`: every training stage on a GPU in a few minutes, and the report.

    python -m benchmarks._gpu_smoke [--image-size 224] [--keep DIR]

Runs the pipeline up to the report (`dvc repro visualize`) on the embedded digits in a
scratch copy of the project, with `train.image_size=224`, `backbone.weights=none` and one
epoch per phase, then fails loudly (exit 1, one line per problem) when:
- a GPU is on the machine (`nvidia-smi -L`) but TensorFlow trained without one;
- the dtype policy in use is not the one tasks/hardware.py chose for these GPUs (e.g. it
  silently fell back to float32);
- XLA was not used for a phase that should have it (fine-tuning, with train.xla auto);
- a training loss went NaN or infinite (the float16 failure mode).
It prints the stage times and what each model recorded (train.json `hardware`). On a CPU
it runs too (slowly at 224 px; try `--image-size 32`) and checks the CPU plan instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._util import ROOT, table

MODELS = ("feature_extraction", "fine_tune")


def overrides(image_size: int) -> dict[str, object]:
    return {
        "train.image_size": image_size,
        "backbone.weights": "none",
        "train.epochs": 1,
        "train.fine_tune.epochs": 1,
    }


def physical_gpus() -> int:
    """GPUs the driver lists, whatever TensorFlow sees (0 without nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


def problems(infos: dict[str, dict], histories: dict[str, dict], *, expected, gpus_on_machine: int):
    """What went wrong, one line each, from each model's train.json and history.json.

    `expected`: tasks.hardware.Plan for the devices (policy, xla) the run should have used.
    """
    out = []
    for name, info in infos.items():
        hw = info.get("hardware") or {}
        if gpus_on_machine and not hw.get("gpus"):
            out.append(
                f"{name}: trained on the CPU although nvidia-smi lists {gpus_on_machine} GPU(s): "
                "TensorFlow does not see them (CUDA libraries? the `gpu` dependency group?)"
            )
        if hw.get("policy") != expected.policy:
            out.append(
                f"{name}: dtype policy {hw.get('policy')!r}, expected {expected.policy!r} "
                "for these devices (mixed precision fell back?)"
            )
        xla = hw.get("xla") or {}
        if "fine_tune" in xla and xla["fine_tune"] != expected.xla and not info.get("augment"):
            out.append(
                f"{name}: fine-tuning ran with XLA {xla['fine_tune']}, expected {expected.xla}"
            )
        for phase in histories[name].get("phases", []):
            bad = [e["epoch"] for e in phase["epochs"] if not math.isfinite(e.get("loss", 0.0))]
            if bad:
                out.append(f"{name}: loss not finite in phase {phase['name']}, epochs {bad}")
    return out


def copy_project(dest: Path) -> None:
    """The project's code and config, as an Airflow run's workspace gets them."""
    sys.path.insert(0, str(ROOT / "dags"))
    from resnet_retrain.workspace import source_files

    for rel in source_files(ROOT, exclude=[]):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)


def run_pipeline(work: Path, image_size: int) -> list[list]:
    """`dvc repro visualize` in `work` with the smoke overrides; [stage, seconds] rows."""
    import yaml

    from tasks.paramfile import read_raw, with_overrides

    raw = with_overrides(read_raw(work / "params.yaml"), overrides(image_size))
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    dvc = [sys.executable, "-m", "dvc"]
    # the stages' `python -m tasks.x` must be this environment's python, as under `make`
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([*dvc, "config", "--local", "core.no_scm", "true"], cwd=work, check=True)
    rows, start = [], time.perf_counter()
    proc = subprocess.Popen(
        [*dvc, "repro", "visualize"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    assert proc.stdout is not None
    stage, since = None, start
    for line in proc.stdout:
        print(line, end="", flush=True)
        if line.startswith("Running stage '"):
            now = time.perf_counter()
            if stage:
                rows.append([stage, f"{now - since:.0f}"])
            stage, since = line.split("'")[1], now
    if proc.wait():
        raise SystemExit(f"error: dvc repro visualize failed (exit {proc.returncode}) in {work}")
    if stage:
        rows.append([stage, f"{time.perf_counter() - since:.0f}"])
    rows.append(["total", f"{time.perf_counter() - start:.0f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args(argv)
    from tasks import hardware

    expected = hardware.plan(hardware.detect())
    work = args.keep or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    copy_project(work)
    times = run_pipeline(work, args.image_size)
    infos = {m: json.loads((work / "models" / m / "train.json").read_text()) for m in MODELS}
    hist = {m: json.loads((work / "models" / m / "history.json").read_text()) for m in MODELS}
    print(table(["stage", "seconds"], times))
    print(
        table(
            ["model", "hardware (train.json)"],
            [[m, json.dumps(i["hardware"])] for m, i in infos.items()],
        )
    )
    print(f"expected: {expected}; report: {work / 'reports' / 'report.html'}")
    found = problems(infos, hist, expected=expected, gpus_on_machine=physical_gpus())
    for p in found:
        print(f"error: {p}", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print("gpu-smoke: FAILED" if found else "gpu-smoke: ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
