"""Stage `backbone`: -> models/backbone/, the ResNet-50 base every transfer stage starts from.

    python -m tasks.backbone [--set backbone.weights=source|imagenet|none|PATH|s3://B/KEY]

`backbone.weights` decides where the base comes from:

    source    train a *source* ResNet-50 on the prepared data with the `backbone.holdout`
              classes removed (the embedded default, the CIFAR-10 study's design: the
              transfer stages then bring the held-out class back)
    imagenet  keras.applications' ImageNet weights (downloaded once into the Keras cache)
    none      random weights
    PATH/URI  a ResNet-50 base weights file, local or s3:// (data.s3_endpoint_url applies)

Writes backbone.weights.h5 (the base, include_top=False), backbone.json (where it came
from; for the source model its classes and val accuracy) and, for the source case,
model.keras (the source classifier) and dvclive/ (its epochs). The stage refuses to run on
data whose validation failed. A killed source training resumes from its last finished epoch.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tasks.common import UserError, atomic_dir, atomic_write_json, file_digest, run_main
from tasks.dataset import Prepared, open_prepared
from tasks.layout import BACKBONE_INFO as INFO_FILE
from tasks.layout import BACKBONE_WEIGHTS as WEIGHTS_FILE
from tasks.layout import LIVE, SOURCE_MODEL
from tasks.paramfile import ParamsError
from tasks.params import BackboneParams, TrainParams, params_from_cli

log = logging.getLogger(__name__)

VALIDATION_SUMMARY = "summary.json"  # inside validate.out_dir


def check_validation(summary: Path) -> None:
    """Stop if the validate stage failed the data; warn if it has not run at all."""
    if not summary.is_file():
        log.warning("%s not found: the data was not validated (run the validate stage)", summary)
        return
    if not json.loads(summary.read_text()).get("passed", False):
        raise UserError(
            f"{summary}: the prepared data failed validation; fix the data (see "
            "the report beside it) before training"
        )


def backbone_weights_path(cfg: BackboneParams) -> Path:
    """The stage's main output, as the transfer stages read it."""
    return Path(cfg.out_dir) / WEIGHTS_FILE


def build_backbone_stage(
    *,
    prepared: Prepared,
    cfg: BackboneParams,
    train: TrainParams,
    s3_endpoint_url: str | None,
    out: Path,
) -> dict:
    """Produce `out` (weights + info, + the source model); returns the info written."""
    from tasks import hardware
    from tasks.model import backbone_of, build_backbone
    from tasks.training import discard_state

    plan, strategy = hardware.setup(
        mixed_precision=train.mixed_precision, xla=train.xla, distribute=train.distribute
    )
    state = Path(train.checkpoint_dir) / "backbone"  # the source training's resume state
    with atomic_dir(out) as tmp:
        if cfg.weights == "source":
            with strategy.scope():
                model, info = train_source(
                    prepared=prepared, cfg=cfg, train=train, state_dir=state, jit_compile=plan.xla
                )
            model.save(tmp / SOURCE_MODEL)
            if (state / LIVE).is_dir():
                shutil.copytree(state / LIVE, tmp / LIVE)
            base = backbone_of(model)
        else:
            with tempfile.TemporaryDirectory() as scratch:
                weights = resolve_weights(
                    cfg.weights, scratch=Path(scratch), s3_endpoint_url=s3_endpoint_url
                )
                with strategy.scope():
                    base = build_backbone(weights)
                info = {"weights": cfg.weights}
                if isinstance(weights, Path):  # the file as given, before Keras re-saves it
                    info["source_sha256"] = file_digest(weights)
        base.save_weights(tmp / WEIGHTS_FILE)
        info = {
            **info,
            "image_size": train.image_size,
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": file_digest(tmp / WEIGHTS_FILE),
        }
        atomic_write_json(tmp / INFO_FILE, info)
    discard_state(state)
    return info


def resolve_weights(spec: str, *, scratch: Path, s3_endpoint_url: str | None) -> str | Path | None:
    """`backbone.weights` -> what `tasks.model.build_backbone` takes."""
    if spec == "none":
        return None
    if spec == "imagenet":
        return "imagenet"
    if spec.startswith("s3://"):
        return download_s3_object(spec, scratch / Path(spec).name, endpoint_url=s3_endpoint_url)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(
            f"backbone.weights = {spec}: no such file (give source, imagenet, none,"
            " a weights file path or an s3:// URI)"
        )
    return path


def download_s3_object(uri: str, dest: Path, *, endpoint_url: str | None) -> Path:
    """Download one object; every failure a user can fix is one clear line."""
    from tasks import s3

    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key or key.endswith("/"):
        raise UserError(f"backbone.weights = {uri}: expected s3://bucket/path/to/file.weights.h5")
    client = s3.client(endpoint_url=endpoint_url, endpoint_key="data.s3_endpoint_url")
    with s3.errors(
        uri, client, param="backbone.weights", what="download", endpoint_key="data.s3_endpoint_url"
    ):
        client.download_file(bucket, key, str(dest))
    return dest


def source_split(
    prepared: Prepared, split: str, keep: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images memmap, labels renumbered over `keep` (-1 elsewhere), rows to use)."""
    labels = prepared.labels(split)
    renumber = np.full(len(prepared.classes), -1, dtype=np.int64)
    renumber[keep] = np.arange(len(keep))
    relabeled = renumber[labels]
    return prepared.images(split), relabeled, np.flatnonzero(relabeled >= 0)


def train_source(
    *,
    prepared: Prepared,
    cfg: BackboneParams,
    train: TrainParams,
    state_dir: Path,
    jit_compile: bool = False,
):
    """Train the source classifier (base from random weights) without the held-out classes;
    (model, info). Resumable from `state_dir`, which the caller removes once it is saved."""
    import keras

    from tasks import training

    keep = source_classes(prepared.classes, holdout=cfg.holdout)
    keras.utils.set_random_seed(train.seed)
    train_ds, val_ds = source_sets(prepared, keep, batch_size=cfg.batch_size, seed=train.seed)
    model = source_model(
        num_classes=len(keep),
        input_size=prepared.image_size,
        image_size=train.image_size,
        bn_momentum=cfg.bn_momentum,
        seed=train.seed,
    )
    training.compile_model(
        model, optimizer=train.optimizer, learning_rate=cfg.learning_rate, jit_compile=jit_compile
    )
    history = training.fit_phase(
        model,
        train_ds,
        val_ds,
        name="source",
        epochs=cfg.epochs,
        state_dir=state_dir,
        fingerprint=source_fingerprint(cfg, train, prepared=prepared),
        patience=cfg.patience,
        reduce_lr_patience=train.reduce_lr_patience,
        reduce_lr_factor=train.reduce_lr_factor,
        min_lr=train.min_lr,
        live_dir=state_dir / LIVE,
        target_val_accuracy=cfg.target_val_accuracy,
    )
    _, val_acc = model.evaluate(val_ds, verbose=0)
    check_source(val_acc, cfg=cfg, classes=len(keep))
    info = {
        "weights": "source",
        "holdout": list(cfg.holdout),
        "classes": [prepared.classes[i] for i in keep],
        "val_accuracy": round(float(val_acc), 4),
        "epochs": len(history),
        "seconds": round(sum(r["seconds"] for r in history), 1),
        "history": history,
    }
    return model, info


def source_sets(prepared: Prepared, keep: list[int], *, batch_size: int, seed: int):
    """(train, val) batches of the `keep` classes only, train reshuffled every epoch."""
    from tasks.training import array_dataset

    x, y, rows = source_split(prepared, "train", keep)
    vx, vy, vrows = source_split(prepared, "val", keep)
    if not len(vrows):
        raise UserError("the source model needs a validation split; set prepare.val_fraction")
    data = {"num_classes": len(keep), "batch_size": batch_size}
    train = array_dataset(x, y, rows=rows, shuffle=True, seed=seed, **data)
    return train, array_dataset(vx, vy, rows=vrows, **data)


def source_classes(classes: list[str], *, holdout: list[str]) -> list[int]:
    """Indices of the classes the source model learns: all but `holdout` (at least 2)."""
    unknown = [c for c in holdout if c not in classes]
    if unknown:
        raise ParamsError(
            "backbone.holdout",
            f"{unknown} not in the dataset; its classes are: {', '.join(classes)}",
        )
    keep = [i for i, c in enumerate(classes) if c not in holdout]
    if len(keep) < 2:
        raise ParamsError("backbone.holdout", "leaves fewer than 2 classes to train on")
    return keep


def source_model(*, num_classes: int, input_size: int, image_size: int, bn_momentum: float, seed):
    """A full model whose ResNet-50 base learns from random weights, BatchNorm included."""
    import keras

    from tasks.model import backbone_of, build_model

    # base_training=None: a base learning from random weights must train its BatchNorm
    model = build_model(
        num_classes=num_classes,
        input_size=input_size,
        image_size=image_size,
        base_training=None,
        seed=seed,
    )
    for layer in backbone_of(model).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum  # read when the train step is traced
    return model


def source_fingerprint(cfg: BackboneParams, train: TrainParams, *, prepared: Prepared) -> str:
    """Names the source training's configuration (its resume state is kept under it)."""
    from tasks.training import config_fingerprint

    return config_fingerprint(
        cfg,
        prepared.info,
        train.image_size,
        train.optimizer,
        train.seed,
        train.reduce_lr_patience,
        train.reduce_lr_factor,
        train.min_lr,
    )


def check_source(val_accuracy: float, *, cfg: BackboneParams, classes: int) -> None:
    """Log the source model's val accuracy; stop below backbone.min_val_accuracy."""
    log.info(
        "source model: val accuracy %.4f on %d classes (held out: %s)",
        val_accuracy,
        classes,
        ", ".join(cfg.holdout),
    )
    if val_accuracy < cfg.min_val_accuracy:
        raise UserError(
            f"the source model reached val accuracy {val_accuracy:.3f} < "
            f"backbone.min_val_accuracy {cfg.min_val_accuracy}; train longer "
            "(backbone.epochs) or tune backbone.learning_rate"
        )


def main() -> None:
    params = params_from_cli(__doc__)
    check_validation(Path(params.validate.out_dir) / VALIDATION_SUMMARY)
    prepared = open_prepared(params.data.prepared_dir)
    info = build_backbone_stage(
        prepared=prepared,
        cfg=params.backbone,
        train=params.train,
        s3_endpoint_url=params.data.s3_endpoint_url,
        out=Path(params.backbone.out_dir),
    )
    extra = (
        f", val accuracy {info['val_accuracy']:.4f} without {info['holdout']}"
        if "val_accuracy" in info
        else ""
    )
    print(f"backbone  {info['weights']} -> {backbone_weights_path(params.backbone)}{extra}")


if __name__ == "__main__":
    run_main(main)
