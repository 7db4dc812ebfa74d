"""Figures and report for one model on the embedded dataset, and their share of a run.

A project model (random ResNet-50, 1 epoch on the digits train split: the figures do not
depend on how good it is) is evaluated and drawn by the real stages, each in a child
process; the table lists every figure's build and save time from figures/figures.json.
The share of a whole run compares the visualize stage with the training time recorded in
models/*/train.json of the last `make run` here (if any), else with this benchmark's epoch.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from benchmarks._util import ROOT, run_measured, table


def _stand_in_model(root: Path, prepared: Path) -> float:
    """Save a 1-epoch project model as models/fine_tune; returns the training seconds."""
    import numpy as np

    from tasks.dataset import open_prepared
    from tasks.model import build_model
    from tasks.params import section

    p = open_prepared(prepared)
    model = build_model(
        num_classes=len(p.classes), input_size=p.image_size, image_size=section("train").image_size
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    hist = model.fit(
        np.asarray(p.images("train")),
        p.labels("train"),
        batch_size=32,
        epochs=1,
        validation_data=(np.asarray(p.images("val")), p.labels("val")),
        verbose=0,
    )
    seconds = time.perf_counter() - start
    folder = root / "models/fine_tune"
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    epoch = {k: float(v[0]) for k, v in hist.history.items()} | {"epoch": 0, "seconds": seconds}
    (folder / "history.json").write_text(
        json.dumps({"phases": [{"name": "head", "epochs": [epoch]}]})
    )
    (folder / "train.json").write_text(
        json.dumps(
            {
                "strategy": "fine_tune",
                "augment": False,
                "unfreeze": None,
                "seconds": {"head": seconds},
            }
        )
    )
    return seconds


def _pipeline_training_seconds() -> float | None:
    """Training seconds of the models the last `make run` left in models/ (None if none)."""
    total = 0.0
    for f in (ROOT / "models").glob("**/train.json"):
        secs = json.loads(f.read_text()).get("seconds") or {}
        total += sum(float(v) for v in secs.values()) if isinstance(secs, dict) else 0
    return total or None


def main() -> None:
    from tests.helpers import params_yaml

    prepared = ROOT / "data/prepared"
    if not (prepared / "dataset.json").is_file():
        print("data/prepared missing: run `dvc repro prepare` first")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        epoch = _stand_in_model(tmp, prepared)
        (tmp / "params.yaml").write_text(
            params_yaml(
                {
                    "data": {"prepared_dir": str(prepared)},
                    "evaluate": {"models": ["fine_tune"]},
                    "visualize": {"models": ["fine_tune"], "source_model": False},
                }
            )
        )
        args = ["--params", str(tmp / "params.yaml")]
        env = {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        ev_wall, ev_rss = run_measured(["-m", "tasks.evaluate", *args], cwd=tmp, env=env)
        vz_wall, vz_rss = run_measured(["-m", "tasks.visualize", *args], cwd=tmp, env=env)
        manifest = json.loads((tmp / "figures/figures.json").read_text())
        report = (tmp / "reports/report.html").stat().st_size
    rows = [[f["file"], f"{f['seconds']:.2f}", f"{f['save_seconds']:.2f}"] for f in manifest]
    build = sum(f["seconds"] for f in manifest)
    save = sum(f["save_seconds"] for f in manifest)
    rows.append(["all figures", f"{build:.1f}", f"{save:.1f}"])
    print(table(["figure (1 model, digits 32 px)", "build s", "save s"], rows))
    print()
    training = _pipeline_training_seconds()
    basis = "training in models/*/train.json" if training else "1 epoch of this benchmark"
    training = training or epoch
    run_total = training + ev_wall + vz_wall
    print(
        table(
            ["step", "wall s", "peak RSS MiB", "share of run"],
            [
                ["training (" + basis + ")", f"{training:.1f}", "-", f"{training / run_total:.0%}"],
                [
                    "evaluate stage (child)",
                    f"{ev_wall:.1f}",
                    f"{ev_rss:.0f}",
                    f"{ev_wall / run_total:.0%}",
                ],
                [
                    "visualize stage (child)",
                    f"{vz_wall:.1f}",
                    f"{vz_rss:.0f}",
                    f"{vz_wall / run_total:.0%}",
                ],
            ],
        )
    )
    print(f"\nreport.html: {report / 1e6:.1f} MB (every figure embedded)")


if __name__ == "__main__":
    main()
