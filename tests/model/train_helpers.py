"""A tiny training project for the training tests: 3 classes, 32 px, random-weight base.

Everything lives under one tmp folder; `params.yaml` there points every stage at it, so a
test can call the stage functions in-process or run `python -m tasks.<stage>` on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.params import Params, load_params
from tests import helpers
from tests.helpers import params_yaml, write_prepared

CLASSES = ["dark", "mid", "bright"]
SIZE = 32


def class_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32, 3) uint8 images whose brightness tells the class, plus noise."""
    return helpers.class_images(n, seed, size=SIZE, classes=len(CLASSES))


def make_project(
    root: Path,
    base_weights: Path,
    *,
    n: tuple[int, int, int] = (24, 9, 9),
    train: dict | None = None,
    backbone: dict | None = None,
) -> Path:
    """Write prepared data, the backbone output and params.yaml under `root`; returns it."""
    splits = {
        s: class_images(k, seed=i)
        for i, (s, k) in enumerate(zip(("train", "val", "test"), n, strict=True))
    }
    write_prepared(root / "prepared", splits, CLASSES)
    (root / "backbone").mkdir(parents=True, exist_ok=True)
    target = root / "backbone" / "backbone.weights.h5"
    if not target.exists():
        target.symlink_to(base_weights)
    params = {
        "data": {"prepared_dir": str(root / "prepared")},
        "validate": {"out_dir": str(root / "validation")},
        "backbone": {
            "out_dir": str(root / "backbone"),
            "batch_size": 8,
            "epochs": 1,
            **(backbone or {}),
        },
        "train": {
            "features_dir": str(root / "features"),
            "models_dir": str(root / "models"),
            "checkpoint_dir": str(root / "checkpoints"),
            "batch_size": 8,
            "epochs": 2,
            "image_size": SIZE,
            "fine_tune": {"epochs": 1},
            **(train or {}),
        },
    }
    (root / "params.yaml").write_text(params_yaml(params))
    return root


def project_params(root: Path, **overrides) -> Params:
    return load_params(root / "params.yaml", overrides)


def live_log(folder: Path, metric: str) -> list[tuple[int, float]]:
    """(step, value) rows of one metric in a DVCLive folder, e.g. metric="eval/loss"."""
    import csv

    with open(folder / "plots" / "metrics" / f"{metric}.tsv", newline="") as f:
        name = metric.rsplit("/", 1)[-1]
        return [(int(r["step"]), float(r[name])) for r in csv.DictReader(f, delimiter="\t")]
