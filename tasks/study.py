"""Stage `study`: the unfreezing sweep's models scored on evaluate.split -> reports/study/.

    make study                               # = dvc repro study, then the report re-rendered
    python -m tasks.study [--params FILE]    # this stage alone, after `dvc repro sweep`

One point per train.sweep.unfreeze x train.sweep.augment (the folders the sweep trains):

reports/study/
  study.json   {"split", "tolerance", "points": [...], "recommended": point}
  study.csv    one row per point: unfreeze, augment, unfrozen layers, trainable params,
               accuracy, held-out recall, macro F1, training seconds
  study.png    accuracy (and held-out recall) vs unfrozen layers, one line per augment value
  study.html   the same as a page of its own (the run report shows it when present)

The recommended setting is the best accuracy; points within `study.tolerance` of it count as
tied and the tie goes to the one that trains fewer parameters (cheaper, less to overfit).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np

from tasks import templates
from tasks.common import UserError, atomic_dir, atomic_write_json, run_main
from tasks.dataset import open_prepared
from tasks.layout import (
    MODEL,
    STUDY,
    STUDY_CSV,
    STUDY_PAGE,
    STUDY_PNG,
    SWEEP,
    TRAIN_INFO,
    sweep_point,
)
from tasks.params import params_from_cli

log = logging.getLogger(__name__)

COLUMNS = [
    "model",
    "unfreeze",
    "augment",
    "unfrozen_layers",
    "weighted_layers",
    "trainable_params",
    "accuracy",
    "holdout_recall",
    "f1_macro",
    "train_seconds",
]


def holdout_recall(y_true: np.ndarray, y_pred: np.ndarray, holdout: list[int]) -> float | None:
    """Share of the held-out classes' images predicted right; None if none is in the split."""
    from sklearn.metrics import recall_score

    present = [c for c in holdout if np.any(y_true == c)]
    if not present:
        return None
    return float(recall_score(y_true, y_pred, labels=present, average="micro", zero_division=0))


def point_row(name: str, *, metrics: dict, train: dict, recall: float | None) -> dict:
    """One study point from its metrics and its train.json (tasks.train.train_info)."""
    unfrozen = train["unfreeze"]  # tasks.model.Unfrozen as a dict: a sweep point fine-tunes
    return {
        "model": name,
        "unfreeze": unfrozen["spec"],
        "augment": bool(train["augment"]),
        "unfrozen_layers": unfrozen["layers"],
        "weighted_layers": unfrozen["weighted_layers"],
        "trainable_params": unfrozen["trainable_params"],
        "accuracy": round(metrics["accuracy"], 4),
        "holdout_recall": None if recall is None else round(recall, 4),
        "f1_macro": round(metrics["f1_macro"], 4),
        "train_seconds": round(sum(train["seconds"].values()), 1),
    }


def recommend(points: list[dict], tolerance: float) -> dict:
    """The best accuracy, or within `tolerance` of it the point training fewest parameters
    (then the better accuracy, then the unaugmented one: cheaper to train)."""
    best = max(p["accuracy"] for p in points)
    tied = [p for p in points if p["accuracy"] >= best - tolerance - 1e-12]
    return min(tied, key=lambda p: (p["trainable_params"], -p["accuracy"], p["augment"]))


def score_points(
    folders: dict[str, Path], *, prepared_dir: Path, split: str, batch_size: int, holdout: list
) -> list[dict]:
    """Every sweep model on `split` of the prepared data: one study row each."""
    from tasks.evaluate import compute_metrics, predict_file

    prepared = open_prepared(prepared_dir)
    images, labels = prepared.images(split), prepared.labels(split)
    if not len(labels):
        raise UserError(f"{prepared_dir}: the {split} split is empty")
    held = [prepared.classes.index(c) for c in holdout if c in prepared.classes]
    rows = []
    for name, folder in folders.items():
        if not (folder / MODEL).is_file():
            raise UserError(f"{folder}/{MODEL} not found; train the sweep first: make study")
        probs = predict_file(
            folder / MODEL,
            images,
            batch_size=batch_size,
            classes=prepared.classes,
            data=prepared_dir,
        )  # (N, C)
        metrics = compute_metrics(labels, probs)
        train = json.loads((folder / TRAIN_INFO).read_text(encoding="utf-8"))
        recall = holdout_recall(labels, probs.argmax(axis=1), held)
        rows.append(point_row(name, metrics=metrics, train=train, recall=recall))
        log.info("%s: accuracy %.4f on %d %s images", name, metrics["accuracy"], len(labels), split)
    return rows


def summarize(points: list[dict], *, split: str, tolerance: float) -> dict:
    """study.json: the points, the recommended one and a line saying it and why."""
    best = recommend(points, tolerance)
    aug = "with" if best["augment"] else "without"
    return {
        "split": split,
        "tolerance": tolerance,
        "headline": f"unfreeze {best['unfreeze']} {aug} augmentation: "
        f"{best['accuracy']:.4f} {split} accuracy, "
        f"{best['trainable_params']:,} trained backbone parameters",
        "rule": f"the best {split} accuracy; points within {tolerance} of it count as tied "
        "and the one training fewer backbone parameters wins",
        "points": points,
        "recommended": best,
    }


def write_study(out_dir: Path, summary: dict, *, dpi: int) -> None:
    """study.json, study.csv, study.png and study.html in one atomic swap of `out_dir`."""
    from tasks.figures import png_bytes
    from tasks.figures.study import study_figure

    png = png_bytes(study_figure(summary["points"], summary["recommended"]), dpi)
    with atomic_dir(out_dir) as tmp:
        atomic_write_json(tmp / STUDY, summary)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(summary["points"])
        (tmp / STUDY_CSV).write_text(buf.getvalue(), encoding="utf-8")
        (tmp / STUDY_PNG).write_bytes(png)
        page = templates.render("study.html.j2", study=summary | {"png": png})
        (tmp / STUDY_PAGE).write_text(page, encoding="utf-8")


def main() -> None:
    params = params_from_cli(__doc__)
    sweep, models = params.train.sweep, Path(params.train.models_dir, SWEEP)
    names = [sweep_point(n, aug) for n in sweep.unfreeze for aug in sweep.augment]
    points = score_points(
        {name: models / name for name in names},  # the folders the sweep stage trains
        prepared_dir=Path(params.data.prepared_dir),
        split=params.evaluate.split,
        batch_size=params.evaluate.batch_size,
        holdout=list(params.backbone.holdout),
    )
    summary = summarize(points, split=params.evaluate.split, tolerance=params.study.tolerance)
    write_study(Path(params.study.out_dir), summary, dpi=params.visualize.dpi)
    for p in points:
        print(
            f"{p['model']:<28} accuracy {p['accuracy']:.4f}  "
            f"{p['trainable_params']:>11,} trained params  {p['train_seconds']:>6.0f} s"
        )
    print(f"recommended  {summary['headline']}")
    print(f"study        {Path(params.study.out_dir, STUDY_PAGE).resolve()}")


if __name__ == "__main__":
    run_main(main)
