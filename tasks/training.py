"""Training machinery shared by the backbone and train stages.

- `array_dataset`: a tf.data pipeline over memory-mapped uint8 arrays (or cached features):
  only a shuffled index is held in memory, each batch is read from disk as uint8, so a
  dataset never becomes a float32 copy.
- `build_augment`, `compile_model`: augmentation layers and optimizer/loss from params.
- `fit_phase`: `model.fit` that can be killed and re-run. Each finished epoch leaves the
  weights (with optimizer state), the history rows and the early-stopping / lr-reduction
  counters in a state folder; a re-run with the same command continues after the last
  finished epoch. A finished phase is remembered too, so a kill in phase 2 does not redo
  phase 1. Each epoch is logged with DVCLive's Keras callback too (`open_live`: one folder
  per model, steps running on over its phases, kept in step with the state across kills).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive.keras import DVCLiveCallback

from tasks.common import UserError, atomic_write_json
from tasks.params import AugmentParams

log = logging.getLogger(__name__)

STATE = "state.json"
# sets up to this size are gathered from one in-memory tensor (CIFAR-10 at 32 px: 150 MiB);
# larger ones are read batch by batch from the memmap
IN_MEMORY_BYTES = 256 << 20


def array_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    rows: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches (x[i], one_hot(y[i])) for i in `rows` (default all), reshuffled each epoch.

    Sets up to IN_MEMORY_BYTES are held as one tensor in x's dtype and batches are gathered
    in the graph (no Python per batch). Larger ones stay memory-mapped: only the batch
    being read is in memory, still as uint8. Never a float32 copy of the set.
    """
    rows = np.arange(len(x)) if rows is None else np.asarray(rows, dtype=np.int64)
    eye = np.eye(num_classes, dtype=np.float32)
    if x.nbytes <= IN_MEMORY_BYTES:
        xt, yt = tf.constant(np.asarray(x)), tf.constant(np.asarray(y, dtype=np.int64))

        def fetch(idx):
            return tf.gather(xt, idx), tf.one_hot(tf.gather(yt, idx), num_classes)
    else:
        fetch = _memmap_fetch(x, y, eye, num_classes)
    ds = tf.data.Dataset.from_tensor_slices(rows)
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(fetch, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _memmap_fetch(x: np.ndarray, y: np.ndarray, eye: np.ndarray, num_classes: int):
    def load(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(idx)  # read the memmap in file order; order inside a batch is moot
        return np.asarray(x[idx]), eye[y[idx]]

    def fetch(idx):
        xb, yb = tf.numpy_function(load, [idx], [tf.as_dtype(x.dtype), tf.float32])
        xb.set_shape((None, *x.shape[1:]))
        yb.set_shape((None, num_classes))
        return xb, yb

    return fetch


def build_augment(cfg: AugmentParams, *, seed: int) -> keras.Sequential | None:
    """Random layers on 0..255 RGB images (identity outside training), or None if off."""
    if not cfg.enabled:
        return None
    layers = keras.layers
    chosen: list = []
    if cfg.flip != "none":
        chosen.append(layers.RandomFlip(cfg.flip, seed=seed))
    if cfg.translate:
        chosen.append(
            layers.RandomTranslation(
                cfg.translate, cfg.translate, fill_mode=cfg.fill_mode, seed=seed
            )
        )
    if cfg.rotation:
        chosen.append(layers.RandomRotation(cfg.rotation, fill_mode=cfg.fill_mode, seed=seed))
    if cfg.zoom:
        chosen.append(layers.RandomZoom(cfg.zoom, fill_mode=cfg.fill_mode, seed=seed))
    if cfg.contrast:
        chosen.append(layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed))
    return keras.Sequential(chosen, name="augment") if chosen else None


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9)
    return {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
    }[name](learning_rate)


def compile_model(
    model: keras.Model,
    *,
    optimizer: str,
    learning_rate: float,
    label_smoothing: float = 0.0,
    jit_compile: bool = False,
) -> None:
    """(Re)compile: needed after every change of `trainable` to take effect.

    `jit_compile` (XLA) is dropped, with one log line, for models holding layers XLA cannot
    compile (Keras' random augmentation layers) instead of Keras' warning on every compile.
    """
    if jit_compile and not _xla_compilable(model):
        log.info("XLA off for %s: its augmentation layers cannot be compiled", model.name)
        jit_compile = False
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def _xla_compilable(layer: keras.Layer) -> bool:
    return layer.supports_jit and all(_xla_compilable(sub) for sub in getattr(layer, "layers", []))


def verbosity() -> int:
    """Keras progress bars on a terminal, one line per epoch in logs."""
    return 1 if sys.stdout.isatty() else 2


class _Checkpoint(keras.callbacks.Callback):
    """Saves the phase state after every epoch; restores the counters of the other callbacks."""

    def __init__(
        self,
        state_dir: Path,
        state: dict,
        fingerprint: str,
        early: keras.callbacks.EarlyStopping,
        reduce: keras.callbacks.ReduceLROnPlateau,
    ):
        super().__init__()
        self.dir, self.state, self.fingerprint = state_dir, state, fingerprint
        self.early, self.reduce = early, reduce
        self.rows: list[dict] = list(state.get("rows", []))
        self.started = 0.0

    def on_train_begin(self, logs=None) -> None:
        # runs after EarlyStopping/ReduceLROnPlateau reset themselves (they come first)
        for cb, key in ((self.early, "early"), (self.reduce, "reduce")):
            for attr, value in self.state.get(key, {}).items():
                setattr(cb, attr, value)

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs or {}
        row = {
            "epoch": epoch + 1,
            **{k: _num(logs.get(k)) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
            "lr": logs["learning_rate"],  # the epoch's, put there by ReduceLROnPlateau
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        self.rows.append(row)
        best = self.state.get("best_val_loss")
        if row["val_loss"] is not None and (best is None or row["val_loss"] < best):
            self.state["best_val_loss"], self.state["best_epoch"] = row["val_loss"], epoch + 1
            _save_weights(self.model, self.dir / "best.weights.h5")
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        _save_weights(self.model, self.dir / name)
        old = self.state.get("weights")
        early, reduce = self.early, self.reduce
        self.state.update(
            fingerprint=self.fingerprint,
            epoch=epoch + 1,
            weights=name,
            rows=self.rows,
            early={"wait": early.wait, "best": _num(early.best), "best_epoch": early.best_epoch},
            reduce={
                "wait": reduce.wait,
                "best": _num(reduce.best),
                "cooldown_counter": reduce.cooldown_counter,
            },
        )
        atomic_write_json(self.dir / STATE, self.state)  # the commit point of the epoch
        if old and old != name:
            (self.dir / old).unlink(missing_ok=True)


class WarmupCosine(keras.callbacks.Callback):
    """Per step: linear warm-up to `peak` over `warmup_epochs`, then cosine decay to `floor`
    at the last step of `epochs`. A pure function of (epoch, batch), so a resumed phase goes
    on at the learning rate it stopped at."""

    def __init__(self, peak: float, *, epochs: int, warmup_epochs: int, steps: int, floor=0.0):
        super().__init__()
        self.peak, self.floor, self.steps = peak, floor, max(1, steps)
        self.warmup, self.total = warmup_epochs * self.steps, max(1, epochs * self.steps)
        self.epoch = 0

    def rate(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / (self.warmup + 1)
        done = (step - self.warmup) / max(1, self.total - self.warmup)
        return self.floor + (self.peak - self.floor) * 0.5 * (1 + math.cos(math.pi * done))

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None) -> None:
        self.model.optimizer.learning_rate.assign(self.rate(self.epoch * self.steps + batch))


def _at_target(val_accuracy: float | None, target: float | None) -> bool:
    return target is not None and val_accuracy is not None and val_accuracy >= target


class _StopAtTarget(keras.callbacks.Callback):
    def __init__(self, target: float):
        super().__init__()
        self.target = target

    def on_epoch_end(self, epoch, logs=None) -> None:
        acc = (logs or {}).get("val_accuracy")
        if _at_target(acc, self.target):
            log.info("val accuracy %.4f >= target %.4f: stopping", acc, self.target)
            self.model.stop_training = True


def open_live(folder: Path, *, rows: list[dict]):
    """DVCLive in `folder` holding exactly `rows`, the model's committed epochs so far (step =
    epoch over all phases), to go on with `DVCLiveCallback(live=...)`.

    DVCLive writes an epoch after the state commits it, so a kill between the two leaves it one
    epoch behind: the missing rows are logged here. A log ahead of `rows` is from a state since
    discarded and starts over. DVCLive's own resume step is not used (it repeats step 0).
    """
    from dvclive import Live
    from dvclive.utils import standardize_metric_name

    def live(resume: bool) -> Live:
        return Live(dir=str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None)

    out = live(resume=True)
    logged = out.summary.get("step", -1) + 1
    if logged > len(rows):
        out, logged = live(resume=False), 0
    out.step = logged
    for row in rows[logged:]:  # the keys DVCLiveCallback logs, from Keras' epoch logs
        logs = {k: row[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        for key, value in {**logs, "learning_rate": row["lr"]}.items():
            value = math.nan if value is None else value  # the history's NaN
            out.log_metric(standardize_metric_name(key, "dvclive.keras"), value)
        out.next_step()
    return out


def fit_phase(
    model: keras.Model,
    train: tf.data.Dataset,
    val: tf.data.Dataset,
    *,
    name: str,
    epochs: int,
    state_dir: Path,
    fingerprint: str,
    patience: int,
    reduce_lr_patience: int,
    reduce_lr_factor: float,
    min_lr: float,
    live_dir: Path | None = None,
    earlier_rows: Sequence[dict] = (),
    baseline_val_loss: float | None = None,
    target_val_accuracy: float | None = None,
    schedule: WarmupCosine | None = None,
    class_weight: dict[int, float] | None = None,
) -> list[dict]:
    """Train a compiled model for one phase, resumably; returns the per-epoch history rows.

    Ends with the best-val-loss weights loaded. With `baseline_val_loss` (the val loss the
    model starts from, e.g. after phase 1) an epoch must beat it to count, so a phase that
    only overfits leaves the starting weights in place. `fingerprint` names the
    configuration: a state left by another configuration is discarded, not resumed.
    `target_val_accuracy` ends the phase after the first epoch validating at least that well.
    `live_dir`: the model's DVCLive folder, after `earlier_rows` (its earlier phases' epochs).
    `schedule` sets the learning rate every step instead of ReduceLROnPlateau.
    `class_weight` ({label: weight}, `class_weights`) weighs each example's loss by its class.
    """
    state_dir = Path(state_dir) / name
    state = _read_state(state_dir, fingerprint)
    if state.get("done"):
        log.info(
            "phase %s: already finished (%d epochs), loading its weights", name, len(state["rows"])
        )
        _load_weights(model, state_dir / state["weights"])
        return state["rows"]
    state = _start(model, state_dir, state, name=name, baseline_val_loss=baseline_val_loss)
    early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)
    if schedule is not None:  # ReduceLROnPlateau only logs the rate then: it never waits that long
        reduce_lr_patience = epochs + 1
    reduce = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", factor=reduce_lr_factor, patience=reduce_lr_patience, min_lr=min_lr
    )
    checkpoint = _Checkpoint(state_dir, state, fingerprint, early, reduce)
    callbacks = [early, reduce, checkpoint]  # the checkpoint saves the counters of both
    if schedule is not None:
        callbacks.insert(0, schedule)
    if live_dir is not None:  # after the checkpoint: DVCLive may lag the state, never lead it
        live = open_live(live_dir, rows=[*earlier_rows, *checkpoint.rows])
        callbacks.append(DVCLiveCallback(live=live))
    if target_val_accuracy is not None:
        callbacks.append(_StopAtTarget(target_val_accuracy))
    if state.get("epoch", 0) < epochs and not _stopped(state, patience, target_val_accuracy):
        model.fit(
            train,
            validation_data=val,
            epochs=epochs,
            initial_epoch=state.get("epoch", 0),
            callbacks=callbacks,
            verbose=verbosity(),
            shuffle=False,  # the dataset reshuffles itself each epoch (array_dataset)
            class_weight=class_weight,
        )
    _finish(model, checkpoint, name=name)
    return checkpoint.rows


def _stopped(state: dict, patience: int, target_val_accuracy: float | None) -> bool:
    """Did the state's last epoch stop the phase? (A re-run after it stays stopped.)"""
    last = (state.get("rows") or [{}])[-1]
    return state.get("early", {}).get("wait", 0) >= patience or _at_target(
        last.get("val_accuracy"), target_val_accuracy
    )


def _start(
    model: keras.Model, state_dir: Path, state: dict, *, name: str, baseline_val_loss
) -> dict:
    """The state to go on from: the last finished epoch's weights loaded, or a new start."""
    if state:
        _load_weights(model, state_dir / state["weights"])
        log.info("phase %s: resuming after epoch %d from %s", name, state["epoch"], state_dir)
        return state
    state_dir.mkdir(parents=True, exist_ok=True)
    if baseline_val_loss is None:
        return {}
    _save_weights(model, state_dir / "best.weights.h5")  # the start is "epoch 0" to beat
    return {"best_val_loss": baseline_val_loss, "best_epoch": 0}


def _finish(model: keras.Model, checkpoint: _Checkpoint, *, name: str) -> None:
    """Load the best epoch's weights (not the last one's) and mark the phase done."""
    state_dir, state = checkpoint.dir, checkpoint.state
    if (state_dir / "best.weights.h5").is_file():
        _load_weights(model, state_dir / "best.weights.h5")
        log.info(
            "phase %s: best val_loss %.4f at epoch %s",
            name,
            state["best_val_loss"],
            state["best_epoch"],
        )
    _save_weights(model, state_dir / "final.weights.h5")
    done = {"done": True, "weights": "final.weights.h5", "fingerprint": checkpoint.fingerprint}
    atomic_write_json(state_dir / STATE, {**state, **done, "rows": checkpoint.rows})


def discard_state(state_dir: Path) -> None:
    """Remove a run's resume state once its outputs are safely written."""
    shutil.rmtree(state_dir, ignore_errors=True)


def class_weights(spec, labels: np.ndarray, classes: list[str]) -> dict[int, float] | None:
    """train.class_weight as Keras' {label: weight}: None for "none"; "balanced" is
    scikit-learn's n / (classes x count) on the train labels; a {class name: weight} mapping
    weighs the classes it names and leaves the others at 1."""
    if spec == "none":
        return None
    if spec == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        present = np.unique(labels)
        weights = dict.fromkeys(range(len(classes)), 1.0)
        balanced = compute_class_weight("balanced", classes=present, y=labels)
        return weights | {int(c): float(w) for c, w in zip(present, balanced, strict=True)}
    unknown = sorted(set(spec) - set(classes))
    if unknown:
        raise UserError(
            f"train.class_weight names {unknown}, which are not classes of this dataset; "
            f"classes: {', '.join(classes)}"
        )
    return {i: float(spec.get(c, 1.0)) for i, c in enumerate(classes)}


def config_fingerprint(*parts) -> str:
    """A short hash naming a training configuration (its resume state is kept under it)."""
    import hashlib

    text = json.dumps([repr(p) for p in parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_state(state_dir: Path, fingerprint: str) -> dict:
    path = state_dir / STATE
    if not path.is_file():
        return {}
    state = json.loads(path.read_text())
    if state.get("fingerprint") != fingerprint or not (state_dir / state["weights"]).is_file():
        log.warning("phase state in %s is from another configuration: starting over", state_dir)
        shutil.rmtree(state_dir)
        return {}
    return state


def _save_weights(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # keeps the .weights.h5 suffix
    model.save_weights(tmp)
    os.replace(tmp, path)


def _load_weights(model: keras.Model, path: Path) -> None:
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # its state is in the file too
    model.load_weights(path)


def _num(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v
