"""The study stage: every sweep point scored, the recommended setting named (ties to fewer
trained parameters), study.json/csv/png/html written, and the report's study section.

The sweep's models are small real Keras models (uint8 in, probabilities out, as the sweep
saves them) whose accuracy is known: one reads the class from brightness, one always says
"mid". train.json beside each says what the point trained, as tasks.train writes it.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks.study import recommend
from tests.helpers import class_images, params_yaml, write_prepared

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["dark", "mid", "bright"]  # images 20 / 120 / 220 bright, +-20 noise


def point(unfreeze, accuracy, params, augment=False) -> dict:
    return {
        "unfreeze": unfreeze,
        "augment": augment,
        "accuracy": accuracy,
        "trainable_params": params,
    }


def test_best_accuracy_wins_unless_a_cheaper_point_is_within_tolerance() -> None:
    points = [point(1, 0.90, 0), point(6, 0.952, 1_000), point(25, 0.955, 9_000)]
    assert recommend(points, tolerance=0.0)["unfreeze"] == 25
    assert recommend(points, tolerance=0.005)["unfreeze"] == 6  # 0.952 ties 0.955
    assert recommend(points, tolerance=0.1)["unfreeze"] == 1
    # equal accuracy and params: the unaugmented point (cheaper to train)
    same = [point(3, 0.95, 10, augment=True), point(3, 0.95, 10)]
    assert recommend(same, tolerance=0.0)["augment"] is False


def save_model(path: Path, *, reads_brightness: bool) -> None:
    """A uint8-in model: mean brightness -> class (thresholds 0.27, 0.67 of 255), or "mid"."""
    import keras

    inputs = keras.Input((16, 16, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)  # (B, 3) channel means
    out = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, out)
    if reads_brightness:  # logits -10m + 2.7, 0, 10m - 6.7 over the channels' mean m
        kernel = np.array([[-10, 0, 10]] * 3, np.float32) / 3
        bias = np.array([2.7, 0, -6.7], np.float32)
    else:
        kernel, bias = np.zeros((3, 3), np.float32), np.array([0, 1, 0], np.float32)
    model.layers[-1].set_weights([kernel, bias])
    path.mkdir(parents=True)
    model.save(path / "model.keras")


def train_json(unfreeze, *, params: int, augment: bool = False) -> dict:
    """What tasks.train.train_info writes, the fields the study reads."""
    layers = {1: 1, 3: 3, 25: 25}[unfreeze]
    return {
        "strategy": "fine_tune",
        "augment": augment,
        "unfreeze": {
            "spec": str(unfreeze),
            "layers": layers,
            "weighted_layers": layers // 3,
            "trainable_params": params,
        },
        "seconds": {"head": 2.0, "fine_tune": 10.5},
    }


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Prepared data, three sweep points (1: always "mid"; 3 and 25: right) and params.yaml."""
    splits = {
        s: class_images(n, seed=i, size=16)
        for i, (s, n) in enumerate([("train", 6), ("val", 6), ("test", 30)])
    }
    write_prepared(tmp_path / "prepared", splits, CLASSES)
    for unfreeze, params, right in ((1, 0, False), (3, 4_096, True), (25, 2_500_000, True)):
        folder = tmp_path / "models" / "sweep" / f"unfreeze-{unfreeze}-aug-false"
        save_model(folder, reads_brightness=right)
        (folder / "train.json").write_text(json.dumps(train_json(unfreeze, params=params)))
    (tmp_path / "params.yaml").write_text(
        params_yaml(
            {
                "data": {"prepared_dir": str(tmp_path / "prepared")},
                "backbone": {"holdout": ["bright"]},
                "train": {
                    "models_dir": str(tmp_path / "models"),
                    "sweep": {"unfreeze": [1, 3, 25], "augment": [False]},
                },
                "study": {"out_dir": str(tmp_path / "study"), "tolerance": 0.005},
            }
        )
    )
    return tmp_path


def run_study(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tasks.study", "--params", str(project / "params.yaml"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_the_study_scores_every_point_and_recommends_the_cheapest_best(project: Path) -> None:
    r = run_study(project)
    assert r.returncode == 0, r.stderr
    out = project / "study"
    summary = json.loads((out / "study.json").read_text())
    points = {p["unfreeze"]: p for p in summary["points"]}
    assert set(points) == {"1", "3", "25"}
    assert points["1"]["accuracy"] == pytest.approx(1 / 3, abs=1e-4)  # always "mid"
    assert points["3"]["accuracy"] == points["25"]["accuracy"] == 1.0
    assert points["1"]["holdout_recall"] == 0.0 and points["3"]["holdout_recall"] == 1.0
    assert points["25"]["train_seconds"] == 12.5
    # 3 and 25 tie at 1.0: the one training 4,096 parameters, not 2.5M, is recommended
    assert summary["recommended"]["unfreeze"] == "3"
    assert "unfreeze 3 without augmentation" in summary["headline"]
    assert "recommended  unfreeze 3 without augmentation" in r.stdout

    with open(out / "study.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(row["unfreeze"], row["trainable_params"]) for row in rows] == [
        ("1", "0"),
        ("3", "4096"),
        ("25", "2500000"),
    ]
    html = (out / "study.html").read_text()
    assert "Unfreezing study" in html and summary["headline"] in html
    assert "data:image/png;base64," in html

    from PIL import Image

    png = np.asarray(Image.open(out / "study.png").convert("L"), dtype=float)
    assert png.shape[1] > png.shape[0] > 300  # two panels side by side: accuracy, recall
    assert png.std() > 10  # lines, labels and axes, not a blank canvas


def test_the_report_shows_the_study_section_only_when_a_study_ran(project: Path) -> None:
    from tasks.params import load_params
    from tasks.report import build_html, collect, stage_outputs

    params = load_params(project / "params.yaml")
    outs = stage_outputs(params)

    def page() -> str:
        ctx = collect(outs, run_id="r1", params={}, report=project / "report.html")
        return build_html(ctx)

    assert "Unfreezing study" not in page()
    assert run_study(project).returncode == 0
    html = page()
    assert 'href="#study"' in html and "<h2 id=study>Unfreezing study</h2>" in html
    assert json.loads((project / "study" / "study.json").read_text())["headline"] in html


def test_a_missing_sweep_point_is_one_clear_error_and_writes_nothing(project: Path) -> None:
    r = run_study(project, "--set", "train.sweep.unfreeze=[3, 6]")
    assert r.returncode != 0
    assert "unfreeze-6-aug-false/model.keras not found" in r.stderr
    assert "make study" in r.stderr and "Traceback" not in r.stderr
    assert not (project / "study").exists()
