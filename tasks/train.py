"""Stage `train`: transfer learning from the backbone stage's base -> models/<run>/.

    python -m tasks.train --set train.strategy=feature_extraction  # models/feature_extraction/
    python -m tasks.train --set train.strategy=fine_tune           # models/fine_tune/
    python -m tasks.train --set train.strategy=sweep       # models/sweep/unfreeze-N-aug-X/

feature_extraction  frozen base. Without augmentation the head trains on the cached
                    embeddings (features stage); with it, end to end through the frozen base.
fine_tune           phase 1 = feature extraction (the head converges on a frozen base);
                    phase 2 unfreezes the top `train.unfreeze` of the base (BatchNorm stays
                    frozen and in inference mode) at `train.fine_tune.learning_rate`.
sweep               fine_tune for every N in train.sweep.unfreeze x train.sweep.augment.

Every run folder holds model.keras (the full uint8-in model), history.json/.csv, train.json
and tensorboard/; it appears only when the run finishes. Killed? Re-run the same command:
it continues after the last finished epoch (state in train.checkpoint_dir).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from tasks.common import atomic_dir, atomic_write_json, file_digest, run_main
from tasks.dataset import Prepared, open_prepared
from tasks.layout import HISTORY, MODEL, TRAIN_INFO
from tasks.params import TrainParams, Unfreeze, params_from_cli

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """One model to train: `out` is its folder, `name` its resume-state folder."""

    strategy: str  # feature_extraction | fine_tune
    unfreeze: Unfreeze | None  # fine_tune only
    augment: bool
    out: Path
    name: str


def runs_for(cfg: TrainParams) -> list[Run]:
    """The runs `train.strategy` asks for, in order."""
    models = Path(cfg.models_dir)
    if cfg.strategy == "feature_extraction":
        return [
            Run(
                "feature_extraction",
                None,
                cfg.augment.enabled,
                models / "feature_extraction",
                "feature_extraction",
            )
        ]
    if cfg.strategy == "fine_tune":
        return [
            Run("fine_tune", cfg.unfreeze, cfg.augment.enabled, models / "fine_tune", "fine_tune")
        ]
    out = []
    for n in cfg.sweep.unfreeze:
        for aug in cfg.sweep.augment:
            name = f"unfreeze-{n}-aug-{'yes' if aug else 'no'}"
            out.append(Run("fine_tune", n, aug, models / "sweep" / name, f"sweep/{name}"))
    return out


def train_run(
    run: Run,
    *,
    prepared: Prepared,
    weights: Path,
    cfg: TrainParams,
    jit_compile: bool = False,
    strategy=None,
) -> dict:
    """Train one run into `run.out` (atomically); returns its train.json."""
    import keras
    import tensorflow as tf

    from tasks import training
    from tasks.features import open_features
    from tasks.model import build_backbone, build_head, build_model, freeze, unfreeze

    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(cfg.seed)
    classes = prepared.classes
    k, state = len(classes), Path(cfg.checkpoint_dir) / run.name
    aug_cfg = dataclasses.replace(cfg.augment, enabled=run.augment)
    fingerprint = training.config_fingerprint(run, cfg, prepared.info, file_digest(weights))
    with strategy.scope():
        base = build_backbone(weights)
        freeze(base)
        head = build_head(
            num_classes=k,
            units=cfg.units,
            activation=cfg.activation,
            dropout=cfg.dropout,
            seed=cfg.seed,
        )
        model = build_model(
            num_classes=k,
            input_size=prepared.image_size,
            image_size=cfg.image_size,
            backbone=base,
            head=head,
            augment=training.build_augment(aug_cfg, seed=cfg.seed),
        )
    opt = {
        "optimizer": cfg.optimizer,
        "label_smoothing": cfg.label_smoothing,
        "jit_compile": jit_compile,
    }
    fit = {
        "state_dir": state,
        "fingerprint": fingerprint,
        "patience": cfg.patience,
        "reduce_lr_patience": cfg.reduce_lr_patience,
        "reduce_lr_factor": cfg.reduce_lr_factor,
        "min_lr": cfg.min_lr,
        "tensorboard_dir": state / "tensorboard",
    }
    data = {"num_classes": k, "batch_size": cfg.batch_size}
    images = {
        s: training.array_dataset(
            prepared.images(s), prepared.labels(s), **data, shuffle=s == "train", seed=cfg.seed
        )
        for s in ("train", "val")
    }

    # phase 1: the head on a frozen base
    with strategy.scope():
        if run.augment:  # every epoch sees new images: no cache possible
            training.compile_model(model, learning_rate=cfg.learning_rate, **opt)
            trainer, sets = model, images
        else:  # the base is frozen and deterministic: its embeddings are cached
            feats = open_features(
                Path(cfg.features_dir), weights=weights, image_size=cfg.image_size
            )
            sets = {
                s: training.array_dataset(
                    feats[s], prepared.labels(s), **data, shuffle=s == "train", seed=cfg.seed
                )
                for s in ("train", "val")
            }
            # no XLA for a Dense head on 2048-d vectors: nothing to fuse, and its dropout
            # RNG made each epoch 5x slower on CPU (2.3 vs 0.4 s, benchmarks train)
            training.compile_model(
                head, learning_rate=cfg.learning_rate, **{**opt, "jit_compile": False}
            )
            trainer = head
    phases = [
        (
            "head",
            training.fit_phase(
                trainer, sets["train"], sets["val"], name="head", epochs=cfg.epochs, **fit
            ),
        )
    ]
    info: dict = {"strategy": run.strategy, "augment": run.augment, "unfreeze": None}

    # phase 2: unfreeze the top of the base, recompile (trainable is read at compile time)
    if run.strategy == "fine_tune" and cfg.fine_tune.epochs:
        with strategy.scope():
            unfrozen = unfreeze(base, run.unfreeze)
            training.compile_model(model, learning_rate=cfg.fine_tune.learning_rate, **opt)
        log.info("%s", unfrozen)
        phases.append(
            (
                "fine_tune",
                training.fit_phase(
                    model,
                    images["train"],
                    images["val"],
                    name="fine_tune",
                    epochs=cfg.fine_tune.epochs,
                    baseline_val_loss=_best_val_loss(phases[0][1]),
                    **fit,
                ),
            )
        )
        info["unfreeze"] = dataclasses.asdict(unfrozen)

    # for evaluate() only: one pass over val is cheaper than compiling it with XLA
    training.compile_model(model, learning_rate=cfg.learning_rate, **{**opt, "jit_compile": False})
    _, val_acc = model.evaluate(images["val"], verbose=0)
    info.update(
        {
            "val_accuracy": round(float(val_acc), 4),
            "image_size": cfg.image_size,
            "input_size": prepared.image_size,
            "classes": classes,
            "backbone_sha256": file_digest(weights),
            "head": {
                "units": list(cfg.units),
                "activation": cfg.activation,
                "dropout": cfg.dropout,
            },
            "seconds": {name: round(sum(r["seconds"] for r in rows), 1) for name, rows in phases},
            "epochs": {name: len(rows) for name, rows in phases},
        }
    )
    with atomic_dir(run.out) as tmp:
        model.save(tmp / MODEL)
        write_history(tmp, phases)
        atomic_write_json(tmp / TRAIN_INFO, info)
        if (state / "tensorboard").is_dir():
            shutil.copytree(state / "tensorboard", tmp / "tensorboard")
    training.discard_state(state)
    log.info("%s: val accuracy %.4f -> %s", run.name, val_acc, run.out)
    return info


def _best_val_loss(rows: list[dict]) -> float | None:
    losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    return min(losses) if losses else None


def write_history(folder: Path, phases: list[tuple[str, list[dict]]]) -> None:
    """history.json ({"phases": [{"name", "epochs": [...]}]}) and history.csv (+ phase)."""
    atomic_write_json(
        folder / HISTORY, {"phases": [{"name": n, "epochs": rows} for n, rows in phases]}
    )
    fields = ["phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    with open(folder / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for name, rows in phases:
            for row in rows:
                writer.writerow({"phase": name, **row})


def main() -> None:
    params = params_from_cli(__doc__)
    from tasks import hardware
    from tasks.backbone import backbone_weights_path

    cfg = params.train
    prepared = open_prepared(params.data.prepared_dir)
    plan, strategy = hardware.setup(
        mixed_precision=cfg.mixed_precision, xla=cfg.xla, distribute=cfg.distribute
    )
    weights = backbone_weights_path(params.backbone)
    for run in runs_for(cfg):
        info = train_run(
            run,
            prepared=prepared,
            weights=weights,
            cfg=cfg,
            jit_compile=plan.xla,
            strategy=strategy,
        )
        print(
            f"{run.name:<28} val accuracy {info['val_accuracy']:.4f}  "
            f"{sum(info['seconds'].values()):.0f} s  -> {run.out}"
        )


if __name__ == "__main__":
    run_main(main)
