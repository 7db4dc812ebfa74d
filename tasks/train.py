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

Every run folder holds model.keras (the full uint8-in model), history.json (per phase and
epoch), train.json (with the temperature that calibrates the model's probabilities, fitted on val:
tasks/calibration.py) and dvclive/ (the same epochs as DVCLive logs them, for `dvc plots` and
`dvc exp show`); it appears only when the run finishes. Killed? Re-run the same command:
it continues after the last finished epoch (state in train.checkpoint_dir).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks import calibration
from tasks.common import atomic_dir, atomic_write_json, file_digest, run_main
from tasks.dataset import Prepared, open_prepared
from tasks.layout import HISTORY, LIVE, MODEL, SWEEP, TRAIN_INFO, sweep_point
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
    if cfg.strategy != "sweep":
        unfreeze = cfg.unfreeze if cfg.strategy == "fine_tune" else None
        return [
            Run(cfg.strategy, unfreeze, cfg.augment.enabled, models / cfg.strategy, cfg.strategy)
        ]
    out = []
    for n in cfg.sweep.unfreeze:
        for aug in cfg.sweep.augment:
            name = sweep_point(n, aug)
            out.append(Run("fine_tune", n, aug, models / SWEEP / name, f"{SWEEP}/{name}"))
    return out


@dataclass(frozen=True)
class Phases:
    """What both phases of a run share: its params, devices, and how to compile and fit."""

    cfg: TrainParams
    strategy: Any  # tf.distribute strategy the model is built and compiled under
    jit_compile: bool
    fit: dict  # fit_phase's settings: resume state, early stopping, lr schedule, DVCLive
    xla_used: dict = field(default_factory=dict)  # {phase: XLA as Keras really compiled it}

    def compile(self, model, *, phase: str, learning_rate: float, xla: bool = True) -> None:
        from tasks.training import compile_model

        compile_model(
            model,
            optimizer=self.cfg.optimizer,
            learning_rate=learning_rate,
            label_smoothing=self.cfg.label_smoothing,
            jit_compile=self.jit_compile and xla,
        )
        self.xla_used[phase] = bool(model.jit_compile)


def train_run(
    run: Run,
    *,
    prepared: Prepared,
    weights: Path,
    cfg: TrainParams,
    jit_compile: bool = False,
    strategy=None,
) -> dict:
    """Build the model, train the head, fine-tune, save into `run.out` (atomically); returns
    its train.json."""
    import keras
    import tensorflow as tf

    from tasks import training
    from tasks.features import open_features

    keras.utils.set_random_seed(cfg.seed)
    state = Path(cfg.checkpoint_dir) / run.name
    fingerprint = training.config_fingerprint(run, cfg, prepared.info, file_digest(weights))
    phases = Phases(
        cfg=cfg,
        strategy=strategy or tf.distribute.get_strategy(),
        jit_compile=jit_compile,
        fit=fit_settings(cfg, state_dir=state, fingerprint=fingerprint, prepared=prepared),
    )
    with phases.strategy.scope():
        model = build(cfg, augment=run.augment, prepared=prepared, weights=weights)
    images = _datasets({s: prepared.images(s) for s in ("train", "val")}, prepared, cfg)
    if run.augment:  # every epoch sees new images: no cache possible
        head_sets = images
    else:  # the base is frozen and deterministic: the head trains on its cached embeddings
        feats = open_features(Path(cfg.features_dir), weights=weights, image_size=cfg.image_size)
        head_sets = _datasets(feats, prepared, cfg)
    history = {"head": train_head(model, phases, sets=head_sets, embedded=not run.augment)}
    unfrozen = None
    if run.strategy == "fine_tune" and cfg.fine_tune.epochs:
        unfrozen, history["fine_tune"] = fine_tune(
            model, phases, layers=run.unfreeze, sets=images, head_rows=history["head"]
        )
    # for predict() only: one pass over val is cheaper than compiling it with XLA
    phases.compile(model, phase="evaluate", learning_rate=cfg.learning_rate, xla=False)
    val_probs = model.predict(images["val"], verbose=0)  # (N, C), val is not shuffled
    val_labels = prepared.labels("val")
    val_acc = float(np.mean(val_probs.argmax(axis=1) == val_labels)) if len(val_labels) else 0.0
    info = train_info(
        run,
        cfg,
        prepared=prepared,
        weights=weights,
        unfrozen=unfrozen,
        val_accuracy=val_acc,
        calibration=calibration.fitted(val_labels, val_probs),
        history=history,
        hardware={
            "policy": keras.mixed_precision.global_policy().name,  # as hardware.apply set it
            "gpus": len(tf.config.list_logical_devices("GPU")),
            "xla": {k: v for k, v in phases.xla_used.items() if k != "evaluate"},
        },
    )
    save(model, out=run.out, history=history, info=info, live_dir=state / LIVE)
    training.discard_state(state)
    log.info("%s: val accuracy %.4f -> %s", run.name, val_acc, run.out)
    return info


def fit_settings(
    cfg: TrainParams, *, state_dir: Path, fingerprint: str, prepared: Prepared
) -> dict:
    """fit_phase's keyword args shared by both phases."""
    from tasks.training import class_weights

    return {
        "state_dir": state_dir,
        "fingerprint": fingerprint,
        "patience": cfg.patience,
        "reduce_lr_patience": cfg.reduce_lr_patience,
        "reduce_lr_factor": cfg.reduce_lr_factor,
        "min_lr": cfg.min_lr,
        "live_dir": state_dir / LIVE,
        "class_weight": class_weights(cfg.class_weight, prepared.labels("train"), prepared.classes),
    }


def build(cfg: TrainParams, *, augment: bool, prepared: Prepared, weights: Path):
    """The full uint8-in model: a frozen base from `weights`, a new head (and augmentation)."""
    from tasks.model import build_backbone, build_head, build_model, freeze
    from tasks.training import build_augment

    base = build_backbone(weights)
    freeze(base)
    head = build_head(
        num_classes=len(prepared.classes),
        units=cfg.units,
        activation=cfg.activation,
        dropout=cfg.dropout,
        seed=cfg.seed,
    )
    return build_model(
        num_classes=len(prepared.classes),
        input_size=prepared.image_size,
        image_size=cfg.image_size,
        backbone=base,
        head=head,
        augment=build_augment(dataclasses.replace(cfg.augment, enabled=augment), seed=cfg.seed),
    )


def train_head(model, phases: Phases, *, sets: dict, embedded: bool) -> list[dict]:
    """Phase 1: the head on the frozen base, alone on `embedded` sets; its history rows."""
    from tasks.model import head_of
    from tasks.training import fit_phase

    trainer = head_of(model) if embedded else model
    with phases.strategy.scope():
        # no XLA for a Dense head on 2048-d vectors: nothing to fuse, and its dropout
        # RNG made each epoch 5x slower on CPU (2.3 vs 0.4 s, benchmarks train)
        phases.compile(
            trainer, phase="head", learning_rate=phases.cfg.learning_rate, xla=not embedded
        )
    return fit_phase(
        trainer, sets["train"], sets["val"], name="head", epochs=phases.cfg.epochs, **phases.fit
    )


def fine_tune(model, phases: Phases, *, layers: Unfreeze, sets: dict, head_rows: list[dict]):
    """Phase 2: unfreeze the top `layers` of the base and train on; (Unfrozen, history rows).

    Recompiled after unfreezing: `trainable` is read at compile time. An epoch must beat the
    head's best val loss to count, so a fine-tuning that only overfits keeps phase 1.
    """
    from tasks.model import backbone_of, unfreeze
    from tasks.training import fit_phase

    cfg = phases.cfg.fine_tune
    with phases.strategy.scope():
        unfrozen = unfreeze(backbone_of(model), layers)
        phases.compile(model, phase="fine_tune", learning_rate=cfg.learning_rate)
    log.info("%s", unfrozen)
    rows = fit_phase(
        model,
        sets["train"],
        sets["val"],
        name="fine_tune",
        epochs=cfg.epochs,
        baseline_val_loss=_best_val_loss(head_rows),
        earlier_rows=head_rows,
        schedule=_schedule(cfg, steps=len(sets["train"]), floor=phases.cfg.min_lr),
        **phases.fit,
    )
    return unfrozen, rows


def _schedule(cfg, *, steps: int, floor: float):
    """Phase 2's learning rate: warm-up + cosine (`train.fine_tune.schedule: cosine`) or None
    for ReduceLROnPlateau on val loss, as in phase 1."""
    from tasks.training import WarmupCosine

    if cfg.schedule != "cosine":
        return None
    return WarmupCosine(
        cfg.learning_rate,
        epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        steps=steps,
        floor=floor,
    )


def _datasets(arrays: dict, prepared: Prepared, cfg: TrainParams) -> dict:
    """{split: batches of (arrays[split] row, one-hot label)} for train (reshuffled every
    epoch) and val; the arrays are images or their cached embeddings."""
    from tasks.training import array_dataset

    return {
        s: array_dataset(
            arrays[s],
            prepared.labels(s),
            num_classes=len(prepared.classes),
            batch_size=cfg.batch_size,
            shuffle=s == "train",
            seed=cfg.seed,
        )
        for s in ("train", "val")
    }


def _best_val_loss(rows: list[dict]) -> float | None:
    losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    return min(losses) if losses else None


def train_info(
    run: Run,
    cfg: TrainParams,
    *,
    prepared: Prepared,
    weights: Path,
    unfrozen,
    val_accuracy: float,
    calibration: dict,
    history: dict[str, list[dict]],
    hardware: dict,
) -> dict:
    """train.json: what was trained on what, how well it validates and how long it took."""
    return {
        "strategy": run.strategy,
        "augment": run.augment,
        "unfreeze": None if unfrozen is None else dataclasses.asdict(unfrozen),
        "val_accuracy": round(float(val_accuracy), 4),
        "calibration": calibration,  # temperature fitted on val (tasks/calibration.py)
        "image_size": cfg.image_size,
        "input_size": prepared.image_size,
        "classes": prepared.classes,
        "backbone_sha256": file_digest(weights),
        "head": {"units": list(cfg.units), "activation": cfg.activation, "dropout": cfg.dropout},
        "seconds": {
            name: round(sum(r["seconds"] for r in rows), 1) for name, rows in history.items()
        },
        "epochs": {name: len(rows) for name, rows in history.items()},
        "hardware": hardware,  # dtype policy, GPUs and XLA per phase actually used
    }


def save(model, *, out: Path, history: dict[str, list[dict]], info: dict, live_dir: Path) -> None:
    """The run folder, all at once: model, history.json, train.json and the DVCLive log."""
    with atomic_dir(out) as tmp:
        model.save(tmp / MODEL)
        phases = [{"name": name, "epochs": rows} for name, rows in history.items()]
        atomic_write_json(tmp / HISTORY, {"phases": phases})
        atomic_write_json(tmp / TRAIN_INFO, info)
        if live_dir.is_dir():
            shutil.copytree(live_dir, tmp / LIVE)


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
