"""Stage `evaluate`: every trained model on the test split -> metrics/ (DVC metrics + plots).

python -m tasks.evaluate [--params params.yaml] [--set evaluate.split=val ...]

metrics/
  metrics.json              {model: {accuracy, top5_accuracy, loss, macro/weighted
                             precision/recall/F1, n_images, seconds_<phase>..., holdout}}
                            (DVC metrics); holdout: the classes the backbone never saw
                            (backbone.json) -> {classes, recall, precision, f1, support,
                            others_accuracy}, absent when it saw every class; ece,
                            ece_calibrated, loss_calibrated: after the temperature train.json
                            records (tasks/calibration.py), also `temperature`
  comparison.csv            one row per model: strategy, unfrozen layers, trainable params,
                            augmentation, accuracy, holdout_recall  (DVC plot: the sweep)
  confusion/<model>.csv     actual,predicted per test image  (DVC plot, template confusion)
  curves/<model>.csv        history with a run-wide step and the phase  (DVC plot)
  details/<model>/          probs.npy (N, C) float32, per_class.csv, confusion.npy (C, C),
                            pairs.json (most confused class pairs), reliability.json
                            (confidence bins before/after calibration)  (read by visualize)
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
from pathlib import Path

import numpy as np

from tasks import calibration
from tasks.common import UserError, atomic_dir, atomic_write_json, file_digest, run_main
from tasks.dataset import open_prepared
from tasks.figures.curves import curve_rows
from tasks.layout import (
    BACKBONE_INFO,
    COMPARISON,
    CONFUSION,
    CURVES,
    DETAILS,
    HISTORY,
    METRICS,
    MODEL,
    PROBS,
    RELIABILITY,
    SCORED,
    TRAIN_INFO,
)
from tasks.params import EvaluateParams, params_from_cli

log = logging.getLogger(__name__)

CURVE_COLUMNS = [
    "step",
    "phase",
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
]


# --- pure metric functions ------------------------------------------------------------------


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, *, top_k: int = 5) -> dict:
    """Scalar metrics of (N,) labels against (N, C) probabilities (scikit-learn's).

    Every class the model knows is passed as `labels`, so a class absent from the test
    split counts as a class (with zero support) instead of failing.
    """
    from sklearn.metrics import (
        accuracy_score,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    n, c = probs.shape
    classes = list(range(c))
    y_pred = probs.argmax(axis=1)
    out = {"accuracy": float(accuracy_score(y_true, y_pred))}
    if c > top_k:
        out[f"top{top_k}_accuracy"] = float(
            top_k_accuracy_score(y_true, probs, k=top_k, labels=classes)
        )
    out["loss"] = cross_entropy(y_true, probs, labels=classes)
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=classes, average=avg, zero_division=0
        )
        out |= {f"precision_{avg}": float(p), f"recall_{avg}": float(r), f"f1_{avg}": float(f)}
    out["n_images"] = int(n)
    return out


def cross_entropy(y_true: np.ndarray, probs: np.ndarray, *, labels: list[int]) -> float:
    """Sparse categorical cross-entropy as Keras reports it: probabilities clipped at 1e-7
    (Keras's epsilon; sklearn's own float64 clip would make one sure miss cost 36, not 16)."""
    import warnings

    from sklearn.metrics import log_loss

    with warnings.catch_warnings():
        # a float32 softmax row sums to 1 only to float32 precision (~1e-7): finer than
        # sklearn's float64 check, and the clip moves the sum further; nothing to report
        warnings.filterwarnings("ignore", "The y_prob values do not sum to one")
        return float(log_loss(y_true, np.clip(probs, 1e-7, 1.0), labels=labels))


def holdout_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], holdout: list[str]):
    """How well the classes the backbone never saw came back, or None if it saw them all.

    recall/precision/F1 pool the held-out classes (scikit-learn's micro average over their
    labels: for one class, exactly its per-class values); others_accuracy is the accuracy
    on the test images of every other class.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    held = [i for i, c in enumerate(classes) if c in holdout]
    if not held:
        return None
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    p, r, f, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=held, average="micro", zero_division=0
    )
    others = ~np.isin(y_true, held)
    return {
        "classes": [classes[i] for i in held],
        "recall": float(r),
        "precision": float(p),
        "f1": float(f),
        "support": int(np.isin(y_true, held).sum()),
        "others_accuracy": float(accuracy_score(y_true[others], y_pred[others]))
        if others.any()
        else None,
    }


def heldout_classes(backbone: dict, classes: list[str]) -> list[str]:
    """The dataset's classes the backbone was not trained on, as backbone.json records them:
    its `holdout` (backbone.holdout) and any class missing from the source's `classes` (a
    source trained on data with prepare.exclude). Imagenet/none/a file record neither."""
    seen = backbone.get("classes")
    return [
        c
        for c in classes
        if c in backbone.get("holdout", []) or (seen is not None and c not in seen)
    ]


def per_class(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> list[dict]:
    """scikit-learn's classification report as rows: class, precision, recall, f1, support."""
    from sklearn.metrics import classification_report

    rep = classification_report(
        y_true,
        y_pred,
        labels=list(range(len(classes))),
        target_names=classes,
        output_dict=True,
        zero_division=0,
    )
    return [
        {
            "class": c,
            "precision": rep[c]["precision"],
            "recall": rep[c]["recall"],
            "f1": rep[c]["f1-score"],
            "support": int(rep[c]["support"]),
        }
        for c in classes
    ]


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class (each row sums to its support), cols = predicted."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


def confused_pairs(cm: np.ndarray, classes: list[str], k: int) -> list[dict]:
    """The `k` class pairs with the most errors between them (both directions), ranked."""
    cm = np.asarray(cm)
    rows = []
    for a in range(len(classes)):
        for b in range(a + 1, len(classes)):
            ab, ba = int(cm[a, b]), int(cm[b, a])
            if ab + ba:
                rows.append(
                    {
                        "a": classes[a],
                        "b": classes[b],
                        "a_as_b": ab,
                        "b_as_a": ba,
                        "total": ab + ba,
                        "ia": a,
                        "ib": b,
                    }
                )
    rows.sort(key=lambda r: (-r["total"], r["ia"], r["ib"]))
    return rows[:k]


def confident_errors(y_true: np.ndarray, probs: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` wrong predictions with the highest confidence, highest first."""
    y_pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != np.asarray(y_true))
    conf = probs[wrong, y_pred[wrong]]
    return wrong[np.argsort(-conf, kind="stable")][:n]


def phase_seconds(history: dict, train: dict | None = None) -> dict[str, float]:
    """{"seconds_<phase>": training seconds}: train.json's totals, else history's epochs."""
    if train and isinstance(train.get("seconds"), dict):
        return {f"seconds_{k}": float(v) for k, v in train["seconds"].items()}
    return {
        f"seconds_{p['name']}": round(
            sum(float(e.get("seconds") or 0) for e in p.get("epochs", [])), 2
        )
        for p in history.get("phases", [])
    }


def comparison_row(name: str, metrics: dict, train: dict) -> dict:
    """One row of the strategy / sweep comparison, from metrics and the model's train.json.

    train.json's "unfreeze" (tasks.model.Unfrozen) is None for feature extraction: no base
    layer trained, so 0 unfrozen layers and 0 trainable base parameters.
    """
    unfrozen = train.get("unfreeze") or {}
    aug = train.get("augment")
    known = bool(train)
    return {
        "model": name,
        "strategy": train.get("strategy", "?"),
        "unfreeze": unfrozen.get("spec", "none" if known else "?"),
        "unfrozen_layers": unfrozen.get("weighted_layers", 0 if known else None),
        "trainable_params": unfrozen.get("trainable_params", 0 if known else None),
        "augmentation": "?" if aug is None else ("yes" if aug else "no"),
        "accuracy": metrics["accuracy"],
        "holdout_recall": (metrics.get("holdout") or {}).get("recall"),
        "f1_macro": metrics["f1_macro"],
        "loss": metrics["loss"],
        "val_accuracy": train.get("val_accuracy"),
    }


# --- the stage ------------------------------------------------------------------------------


def find_models(patterns: tuple[str, ...], root: Path) -> dict[str, Path]:
    """{name: folder} for every model folder under `root` named or matched; names are the
    folders' own names (fine_tune, unfreeze-10-aug-yes)."""
    found: dict[str, Path] = {}
    for pat in patterns:
        if glob.has_magic(pat):
            folders = sorted(
                Path(p) for p in glob.glob(str(root / pat)) if Path(p, MODEL).is_file()
            )
        else:
            if not (root / pat / MODEL).is_file():
                raise UserError(
                    f"{root / pat}/model.keras not found; train it first (dvc "
                    "repro) or remove it from evaluate.models"
                )
            folders = [root / pat]
        for f in folders:
            if f.name in found and found[f.name] != f:
                raise UserError(
                    f"two model folders named {f.name!r} ({found[f.name]}, {f}); "
                    "model names must be unique"
                )
            found[f.name] = f
    if not found:
        raise UserError(f"no model found in evaluate.models = {list(patterns)}")
    return found


def predict(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 (memmap ok) -> (N, C) float32, `batch_size` images at a time."""
    out = [
        np.asarray(model(np.asarray(images[s : s + batch_size]), training=False), dtype=np.float32)
        for s in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def evaluate(
    *, cfg: EvaluateParams, prepared_dir: Path, models_dir: Path, backbone_dir: Path
) -> dict[str, dict]:
    """Score every model; write metrics/ in one atomic swap; returns metrics.json's content."""
    prepared = open_prepared(prepared_dir)
    classes = prepared.classes
    holdout = heldout_classes(_read_json(backbone_dir / BACKBONE_INFO), classes)
    images, labels = prepared.images(cfg.split), prepared.labels(cfg.split)
    if not len(labels):
        raise UserError(f"{prepared_dir}: the {cfg.split} split is empty")
    models = find_models(cfg.models, models_dir)
    metrics, comparison = {}, []
    with atomic_dir(Path(cfg.out_dir)) as out:
        for name, folder in models.items():
            probs = predict_file(
                folder / MODEL,
                images,
                batch_size=cfg.batch_size,
                classes=classes,
                data=prepared_dir,
            )  # (N, C)
            history, train = _read_json(folder / HISTORY), _read_json(folder / TRAIN_INFO)
            m = compute_metrics(labels, probs, top_k=cfg.top_k) | phase_seconds(history, train)
            if held := holdout_metrics(labels, probs.argmax(axis=1), classes, holdout):
                m["holdout"] = held
            temperature = calibration.temperature_of(train)
            calibrated = calibration.scale(probs, temperature)
            m |= {
                "ece": calibration.ece(labels, probs),
                "ece_calibrated": calibration.ece(labels, calibrated),
                "loss_calibrated": cross_entropy(
                    labels, calibrated, labels=list(range(len(classes)))
                ),
                "temperature": temperature,
            }
            metrics[name] = m
            comparison.append(comparison_row(name, m, train))
            write_details(
                out,
                name,
                labels=labels,
                probs=probs,
                classes=classes,
                history=history,
                pairs=cfg.confused_pairs,
                scored=scored_record(folder / MODEL, cfg.split, labels),
            )
            atomic_write_json(
                out / DETAILS / name / RELIABILITY,
                {
                    "temperature": temperature,
                    "raw": calibration.reliability(labels, probs),
                    "calibrated": calibration.reliability(labels, calibrated),
                },
            )
            log.info(
                "%s: accuracy %.4f on %d %s images", name, m["accuracy"], len(labels), cfg.split
            )
        atomic_write_json(out / METRICS, metrics)
        _write_csv(out / COMPARISON, comparison)
    return metrics


def predict_file(
    model_file: Path, images: np.ndarray, *, batch_size: int, classes: list[str], data: Path
) -> np.ndarray:
    """The saved model's (N, C) probabilities; one clear error if it has other classes."""
    from tasks.model import load_model

    model = load_model(model_file)
    if model.output_shape[-1] != len(classes):
        raise UserError(
            f"{model_file.parent}: the model has {model.output_shape[-1]} outputs "
            f"but {data} has {len(classes)} classes; retrain it"
        )
    return predict(model, images, batch_size)


def scored_record(model_file: Path, split: str, labels: np.ndarray) -> dict:
    """What probs.npy are the predictions of: this model file on these labels of `split`."""
    return {
        "model_sha256": file_digest(model_file),
        "split": split,
        "labels_sha256": labels_digest(labels),
        "n_images": len(labels),
    }


def labels_digest(labels: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()


def write_details(
    out: Path,
    name: str,
    *,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    history: dict,
    pairs: int,
    scored: dict,
) -> None:
    """One model's files in the (temporary) metrics folder `out`: details/<model>/ for
    visualize and publish, confusion/ and curves/ for DVC plots."""
    y_pred = probs.argmax(axis=1)
    cm = confusion(labels, y_pred, len(classes))
    details = out / DETAILS / name
    details.mkdir(parents=True)
    np.save(details / PROBS, probs)
    np.save(details / "confusion.npy", cm)
    _write_csv(details / "per_class.csv", per_class(labels, y_pred, classes))
    atomic_write_json(details / "pairs.json", confused_pairs(cm, classes, pairs))
    atomic_write_json(details / SCORED, scored)  # publish reuses probs.npy instead of predicting
    _write_csv(
        out / CONFUSION / f"{name}.csv",
        [
            {"actual": classes[t], "predicted": classes[p]}
            for t, p in zip(labels, y_pred, strict=True)
        ],
    )
    _write_csv(out / CURVES / f"{name}.csv", curve_rows(history), columns=CURVE_COLUMNS)


def _write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    cols = columns or (list(rows[0]) if rows else [])
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _read_json(path: Path) -> dict:
    """A model folder's side file; {} if absent (an older or hand-made model)."""
    if not path.is_file():
        log.warning("%s missing; its fields stay empty", path)
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


# per model; ece_calibrated: after temperature scaling (the labels, so accuracy, stay)
KEY_METRICS = (
    "accuracy",
    "top5_accuracy",
    "f1_macro",
    "loss",
    "holdout_recall",
    "ece",
    "ece_calibrated",
)


def metrics_table(metrics: dict[str, dict]) -> str:
    """The key metrics per model as a text table (evaluate and `make run` print it)."""
    rows = {name: m | holdout_columns(m) for name, m in metrics.items()}
    keys = [k for k in KEY_METRICS if any(k in m for m in rows.values())]
    width = max([len(n) for n in rows] + [5]) + 2
    lines = ["model".ljust(width) + "".join(k.rjust(15) for k in keys)]
    for name, m in rows.items():
        lines.append(
            name.ljust(width) + "".join((f"{m[k]:.4f}" if k in m else "-").rjust(15) for k in keys)
        )
    return "\n".join(lines)


def holdout_columns(m: dict) -> dict:
    """metrics.json's holdout dict as flat columns (holdout_recall, ...); {} without one."""
    held = m.get("holdout") or {}
    return {
        f"holdout_{k}" if k != "others_accuracy" else k: v
        for k, v in held.items()
        if k != "classes"
    }


def main() -> None:
    params = params_from_cli(__doc__)
    metrics = evaluate(
        cfg=params.evaluate,
        prepared_dir=Path(params.data.prepared_dir),
        models_dir=Path(params.train.models_dir),
        backbone_dir=Path(params.backbone.out_dir),
    )
    print(metrics_table(metrics))


if __name__ == "__main__":
    run_main(main)
