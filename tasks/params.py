"""Typed, frozen view of params.yaml.

`load_params()` is the only reader of params.yaml. Every section is a frozen dataclass; an
unknown key, a wrong type or an out-of-range value fails before any work with one message
that names the key and what is allowed, e.g.

    params.yaml: prepare.fraction = -0.5: must be in (0, 1]

Each section's defaults live here, commented once; params.yaml repeats them so a user sees
every knob in one file.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from tasks.common import UserError

DEFAULT_PARAMS = Path("params.yaml")

Source = Literal["digits", "cifar10", "cifar100", "imagewoof", "folder"]
SOURCES: tuple[str, ...] = get_args(Source)


class ParamsError(UserError):
    """A bad value in params.yaml; `key` is the dotted path to it."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}" if key else message)


def check(ok: bool, key: str, message: str) -> None:
    """Raise a ParamsError for `key` unless `ok`; used by the sections' `__post_init__`."""
    if not ok:
        raise ParamsError(key, message)


# --- section: data (where a dataset comes from) -------------------------------------------


@dataclass(frozen=True)
class DataParams:
    source: Source = "digits"  # digits is embedded (scikit-learn), needs no network
    url: str | None = None  # archive URL override (a mirror); None = the official URL
    md5: str | None = None  # expected archive md5 when `url` is a mirror; None = official
    path: str | None = None  # `folder` source: local folder or s3://bucket/prefix
    s3_endpoint_url: str | None = None  # S3-compatible endpoint (MinIO); None = AWS
    cache_dir: str = "data/downloads"  # downloaded archives, reused while their md5 matches
    raw_dir: str = "data/raw"  # fetch output (DVC out)
    prepared_dir: str = "data/prepared"  # prepare output (DVC out)
    download_retries: int = 5  # attempts per download, exponential backoff between them
    download_timeout: float = 60.0  # seconds without a byte before a download attempt fails
    download_backoff: float = 1.0  # seconds before the 2nd attempt, doubling after each failure

    def __post_init__(self) -> None:
        check(
            self.source != "folder" or bool(self.path),
            "path",
            "the folder source needs data.path (a local folder or s3://bucket/prefix)",
        )
        check(
            self.md5 is None or (len(self.md5) == 32 and _is_hex(self.md5)),
            "md5",
            f"{self.md5!r} is not a 32-digit hex md5",
        )
        check(self.download_retries >= 1, "download_retries", "must be >= 1")
        check(self.download_timeout > 0, "download_timeout", "must be > 0")
        check(self.download_backoff >= 0, "download_backoff", "must be >= 0")


# --- section: prepare (decode, filter, subsample, split) -----------------------------------


@dataclass(frozen=True)
class PrepareParams:
    image_size: int | None = 32  # output side in px; None = native (CIFAR 32, digits 8)
    resize: Literal["squash", "crop", "pad"] = "squash"  # how a non-square image fits the square
    include: tuple[str, ...] = ()  # class names to keep; empty = all
    exclude: tuple[str, ...] = ()  # class names to drop (e.g. hold out "ship")
    max_per_class: int | None = None  # cap per class in each official split; None = no cap
    fraction: float | None = None  # keep this share of each class in each split; None = all
    val_fraction: float = 0.1  # validation split carved from train, stratified
    test_fraction: float = 0.2  # test split carved for sources without an official one
    seed: int = 42  # one seed for subsampling and splitting
    workers: int = 0  # image decoding threads; 0 = one per core

    def __post_init__(self) -> None:
        check(
            self.image_size is None or 8 <= self.image_size <= 1024,
            "image_size",
            f"{self.image_size} is out of range: must be null or 8..1024",
        )
        check(
            self.max_per_class is None or self.max_per_class >= 1,
            "max_per_class",
            f"{self.max_per_class} is out of range: must be null or >= 1",
        )
        check(
            self.fraction is None or 0 < self.fraction <= 1,
            "fraction",
            f"{self.fraction} is out of range: must be null or in (0, 1]",
        )
        check(
            0 <= self.val_fraction < 1,
            "val_fraction",
            f"{self.val_fraction} is out of range: must be in [0, 1)",
        )
        check(
            0 < self.test_fraction < 1,
            "test_fraction",
            f"{self.test_fraction} is out of range: must be in (0, 1)",
        )
        check(self.workers >= 0, "workers", "must be >= 0")
        check(not (self.include and self.exclude), "include", "give include or exclude, not both")
        both = set(self.include) & set(self.exclude)
        check(not both, "exclude", f"{sorted(both)} also in include")


# --- sections filled in by later stages -----------------------------------------------------
# Each later stage owns one dataclass below; keep their shape (frozen, defaults commented,
# ranges checked in __post_init__ with `check`).


@dataclass(frozen=True)
class ValidateParams:
    # What is checked lives in the suites (expectations/*.json, reviewed in diffs); how strict
    # lives here: a suite names these keys as {"$PARAMETER": "<key>"} and they are filled in
    # at run time, so one suite serves every dataset. A literal in a suite is a fixed rule.
    expectations_dir: str = "expectations"  # every *.json suite in it is run
    out_dir: str = "reports/validation"  # summary.json, index.html, results.json + docs/ (GX)
    min_per_class: int = 10  # images of every class in every split
    min_class_ratio: float = 0.5  # smallest class / largest class, in every split
    max_quarantine_share: float = 0.01  # unreadable files / all files, in every split
    min_pixel_range: int = 1  # max - min pixel value; below it an image is constant (all black)
    splits: tuple[Literal["train", "val", "test"], ...] = ("train", "val", "test")  # must exist
    # expectation name -> error (stops the run) | warning (reported); overrides the suite's
    severity: dict[str, str] = field(default_factory=dict)
    examples: int = 5  # failing rows shown per check; hash checks: images + every copy

    def __post_init__(self) -> None:
        check(self.min_per_class >= 1, "min_per_class", f"{self.min_per_class}: must be >= 1")
        check(
            0 <= self.min_class_ratio <= 1,
            "min_class_ratio",
            f"{self.min_class_ratio} is out of range: must be in [0, 1]",
        )
        check(
            0 <= self.max_quarantine_share <= 1,
            "max_quarantine_share",
            f"{self.max_quarantine_share} is out of range: must be in [0, 1]",
        )
        check(
            0 <= self.min_pixel_range <= 255,
            "min_pixel_range",
            f"{self.min_pixel_range} is out of range: must be 0..255",
        )
        check(len(set(self.splits)) == len(self.splits), "splits", "lists a split twice")
        for name, level in self.severity.items():
            check(
                level in ("error", "warning"),
                f"severity.{name}",
                f"{level!r} is not allowed; allowed values: error, warning",
            )
        check(1 <= self.examples <= 100, "examples", f"{self.examples}: must be 1..100")


# --- sections: backbone and train (tasks/backbone.py, tasks/features.py, tasks/train.py) ---

RESNET50_LAYERS = 175  # layers of the ResNet-50 base below its input (include_top=False, avg)
RESNET50_STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")
Unfreeze = int | str  # a top-layer count, a stage name from RESNET50_STAGES, or "all"


def _check_unfreeze(value: Unfreeze, key: str) -> None:
    if isinstance(value, int):
        check(
            0 <= value <= RESNET50_LAYERS,
            key,
            f"{value} is out of range: ResNet-50 has "
            f"{RESNET50_LAYERS} layers; give 0..{RESNET50_LAYERS}, a stage name or all",
        )
    else:
        check(
            value == "all" or value in RESNET50_STAGES,
            key,
            f"{value!r} is not a layer count, a stage name ({', '.join(RESNET50_STAGES)}) or all",
        )


@dataclass(frozen=True)
class BackboneParams:
    # source: train a *source* ResNet-50 on the prepared data without the `holdout` classes
    # (the embedded default: no ImageNet here); imagenet: the Keras download/cache; none:
    # random; or a path / s3:// URI of a ResNet-50 base weights file (.weights.h5 or .h5)
    weights: str = "source"
    holdout: tuple[str, ...] = ("9",)  # classes the source model never sees (the "ship" role)
    out_dir: str = "models/backbone"  # backbone.weights.h5, backbone.json (+ model.keras)
    epochs: int = 10  # source model: at most (10 reached 96% val on the digits)
    learning_rate: float = 3e-4  # source model, Adam (SGD 0.05 / Adam 1e-3 did much worse)
    batch_size: int = 32
    patience: int = 4  # source model: early-stopping patience on val loss, in epochs
    # source model's BatchNorm momentum: Keras' 0.99 averages over ~100 steps, so on a small
    # set the moving statistics lag the weights for many epochs (val accuracy stuck at chance
    # while train accuracy is 95%); 0.9 tracks them within an epoch
    bn_momentum: float = 0.9
    min_val_accuracy: float = 0.0  # fail the stage if the source model validates below this
    # stop the source model once an epoch validates at or above this (null = run all
    # `epochs`): the transfer stages need a good base, not the last point of val accuracy
    target_val_accuracy: float | None = 0.94

    def __post_init__(self) -> None:
        check(bool(self.weights.strip()), "weights", "give source, imagenet, none or a path")
        check(
            self.weights != "source" or bool(self.holdout),
            "holdout",
            "the source model needs at least one held-out class",
        )
        check(self.epochs >= 1, "epochs", f"{self.epochs} is out of range: must be >= 1")
        check(
            0 < self.learning_rate < 1,
            "learning_rate",
            f"{self.learning_rate} is out of range: must be in (0, 1)",
        )
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.patience >= 1, "patience", "must be >= 1")
        check(0 < self.bn_momentum < 1, "bn_momentum", f"{self.bn_momentum}: must be in (0, 1)")
        check(0 <= self.min_val_accuracy <= 1, "min_val_accuracy", "must be in [0, 1]")
        check(
            self.target_val_accuracy is None or 0 < self.target_val_accuracy <= 1,
            "target_val_accuracy",
            f"{self.target_val_accuracy} is out of range: must be in (0, 1] or null",
        )


@dataclass(frozen=True)
class AugmentParams:
    enabled: bool = False  # Keras random layers inside the model, active only in training
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    translate: float = 0.1  # max shift, share of the side (0 = off)
    rotation: float = 0.05  # max rotation, share of a full turn (0 = off)
    zoom: float = 0.1  # max zoom in/out, share of the side (0 = off)
    contrast: float = 0.1  # max contrast change factor (0 = off)
    fill_mode: Literal["constant", "reflect", "nearest", "wrap"] = "constant"  # uncovered px

    def __post_init__(self) -> None:
        for key in ("translate", "rotation", "zoom", "contrast"):
            v = getattr(self, key)
            check(0 <= v < 1, key, f"{v} is out of range: must be in [0, 1)")


@dataclass(frozen=True)
class FineTuneParams:
    learning_rate: float = 1e-5  # phase 2: small, so unfrozen layers move gently
    epochs: int = 2  # phase 2 epochs at most (early stopping may end it sooner)

    def __post_init__(self) -> None:
        check(
            0 < self.learning_rate < 1,
            "learning_rate",
            f"{self.learning_rate} is out of range: must be in (0, 1)",
        )
        check(self.epochs >= 0, "epochs", f"{self.epochs} is out of range: must be >= 0")


@dataclass(frozen=True)
class SweepParams:
    unfreeze: tuple[Unfreeze, ...] = (1, 3, 6, 12, 15, 25)  # top-N layers, one run each
    augment: tuple[bool, ...] = (False, True)  # each N without and with augmentation

    def __post_init__(self) -> None:
        check(bool(self.unfreeze), "unfreeze", "give at least one value")
        for i, v in enumerate(self.unfreeze):
            _check_unfreeze(v, f"unfreeze[{i}]")
        check(bool(self.augment), "augment", "give at least one of false, true")


@dataclass(frozen=True)
class TrainParams:
    strategy: Literal["feature_extraction", "fine_tune", "sweep"] = "fine_tune"
    image_size: int = 32  # side the backbone sees; images are resized inside the model
    units: tuple[int, ...] = (128, 64)  # hidden Dense layers of the head; [] = softmax only
    activation: str = "relu"  # of the hidden Dense layers
    dropout: float = 0.2  # before each Dense of the head
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = 1e-3  # phase 1 (head, frozen base)
    batch_size: int = 32  # global batch (split across GPUs)
    epochs: int = 30  # phase 1 epochs at most; cheap on cached features
    label_smoothing: float = 0.1
    patience: int = 5  # early stopping on val loss, in epochs (best weights restored)
    reduce_lr_patience: int = 2  # epochs without val-loss progress before lr *= factor
    reduce_lr_factor: float = 0.5
    min_lr: float = 1e-7
    unfreeze: Unfreeze = "conv5"  # fine_tune phase 2: top N layers, a stage and above, or all
    fine_tune: FineTuneParams = field(default_factory=FineTuneParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    sweep: SweepParams = field(default_factory=SweepParams)
    features_dir: str = "features"  # cached embeddings (the features stage's output)
    models_dir: str = "models"  # <strategy>/ or sweep/unfreeze-<N>-aug-<yes|no>/ inside
    checkpoint_dir: str = "models/.checkpoints"  # per-run resume state, removed on success
    seed: int = 42  # weights init, shuffling, dropout, augmentation
    mixed_precision: Literal["auto", "off", "mixed_float16", "mixed_bfloat16"] = "auto"
    xla: Literal["auto", "on", "off"] = "auto"  # auto: on (GPU and CPU; see tasks/hardware.py)
    distribute: Literal["auto", "off", "mirrored"] = "auto"  # auto: mirrored if > 1 GPU

    def __post_init__(self) -> None:
        check(
            32 <= self.image_size <= 1024,
            "image_size",
            f"{self.image_size} is out of range: ResNet-50 needs 32..1024 px",
        )
        check(all(u >= 1 for u in self.units), "units", "every Dense width must be >= 1")
        check(0 <= self.dropout < 1, "dropout", f"{self.dropout} is out of range: [0, 1)")
        check(
            0 < self.learning_rate < 1,
            "learning_rate",
            f"{self.learning_rate} is out of range: must be in (0, 1)",
        )
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.epochs >= 1, "epochs", f"{self.epochs} is out of range: must be >= 1")
        check(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
        check(self.patience >= 1, "patience", "must be >= 1")
        check(self.reduce_lr_patience >= 1, "reduce_lr_patience", "must be >= 1")
        check(0 < self.reduce_lr_factor < 1, "reduce_lr_factor", "must be in (0, 1)")
        check(0 <= self.min_lr < self.learning_rate, "min_lr", "must be in [0, learning_rate)")
        _check_unfreeze(self.unfreeze, "unfreeze")


@dataclass(frozen=True)
class AuditParams:
    # Checks on the features stage's cached embeddings (tasks/audit.py); results go to out_dir.
    out_dir: str = "reports/audit"  # summary.json (DVC metrics), CSVs, PNGs
    # cosine similarity of L2-normalised embeddings at or above which two images of different
    # splits count as near-duplicates (0.97 on the digits: see tasks/audit.py's docstring)
    near_duplicate_similarity: float = 0.97
    hash_max_distance: int = 2  # dHash bits (of 64) that may differ for a pixel near-duplicate
    max_near_duplicate_share: float = 0.0  # val/test images with a near-duplicate earlier
    near_duplicate_severity: Literal["error", "warning"] = "warning"  # error stops the run
    label_folds: int = 5  # out-of-fold probabilities for the label-issue finder
    label_top_per_class: int = 5  # label suspects listed (and drawn) per given class
    # the champion's data to compare with (e.g. `dvc get . features data/prepared --rev
    # <champion commit>`); both null = no drift check
    reference_features: str | None = None
    reference_prepared: str | None = None
    drift_samples: int = 1000  # embeddings per side in the MMD test (kernel is 4x this squared)
    drift_permutations: int = 200  # permutation-test draws; p-value resolution 1/(draws+1)
    drift_alpha: float = 0.01  # p-value below which the embeddings have drifted
    max_channel_shift: float = 8.0  # mean pixel level change (0..255) per channel that drifts
    pairs_shown: int = 16  # near-duplicate pairs drawn
    seed: int = 42  # folds, subsamples, permutations

    def __post_init__(self) -> None:
        check(
            0 < self.near_duplicate_similarity <= 1,
            "near_duplicate_similarity",
            f"{self.near_duplicate_similarity} is out of range: must be in (0, 1]",
        )
        check(0 <= self.hash_max_distance <= 64, "hash_max_distance", "must be 0..64")
        check(0 <= self.max_near_duplicate_share <= 1, "max_near_duplicate_share", "in [0, 1]")
        check(2 <= self.label_folds <= 20, "label_folds", f"{self.label_folds}: must be 2..20")
        check(self.label_top_per_class >= 1, "label_top_per_class", "must be >= 1")
        check(
            (self.reference_features is None) == (self.reference_prepared is None),
            "reference_prepared",
            "give reference_features and reference_prepared together (or neither)",
        )
        check(self.drift_samples >= 10, "drift_samples", "must be >= 10")
        check(self.drift_permutations >= 19, "drift_permutations", "must be >= 19")
        check(0 < self.drift_alpha < 1, "drift_alpha", "must be in (0, 1)")
        check(self.max_channel_shift > 0, "max_channel_shift", "must be > 0")
        check(1 <= self.pairs_shown <= 256, "pairs_shown", "must be 1..256")


@dataclass(frozen=True)
class EvaluateParams:
    # Model folders to score, inside train.models_dir (globs allowed). A glob that matches
    # nothing is skipped (the sweep is optional); a plain name that is missing is an error.
    models: tuple[str, ...] = ("feature_extraction", "fine_tune", "sweep/*")
    split: Literal["test", "val"] = "test"  # the held-out split the metrics are measured on
    out_dir: str = "metrics"  # metrics.json (DVC metrics) + per-model plot data
    batch_size: int = 64  # images per predict() call; bounds memory at any image size
    top_k: int = 5  # top-k accuracy, reported only when there are more than k classes
    confused_pairs: int = 10  # most-confused class pairs kept in the leakage table

    def __post_init__(self) -> None:
        check(len(self.models) > 0, "models", "give at least one model folder")
        check(self.batch_size >= 1, "batch_size", f"{self.batch_size}: must be >= 1")
        check(self.top_k >= 2, "top_k", f"{self.top_k}: must be >= 2")
        check(self.confused_pairs >= 1, "confused_pairs", f"{self.confused_pairs}: must be >= 1")


@dataclass(frozen=True)
class VisualizeParams:
    # Models drawn one by one (activations, filters, Grad-CAM, errors), inside
    # train.models_dir; every evaluated model still appears in the comparison.
    models: tuple[str, ...] = ("feature_extraction", "fine_tune")
    source_model: bool = True  # also draw backbone.out_dir/model.keras (the source
    #                            classifier) in activations and filters, when it exists
    out_dir: str = "figures"  # PNGs, one file per figure
    report: str = "reports/report.html"  # self-contained: figures embedded as base64
    validation_summary: str = "reports/validation/summary.json"  # shown if present
    seed: int = 0  # which samples / images are drawn
    dpi: int = 100  # PNG resolution; 100 keeps the report small, 200 for print
    samples_per_class: int = 8  # EDA grid columns
    image_index: int = 0  # test image used for activations and the preprocessing pair
    activation_layers: tuple[str, ...] = (
        "conv1_relu",
        "conv2_block3_out",
        "conv3_block4_out",
        "conv4_block6_out",
        "conv5_block3_out",
    )
    activation_channels: int = 8  # feature maps shown per layer and model
    first_conv_layer: str = "conv1_conv"  # its kernels are drawn as RGB tiles
    filter_layers: tuple[str, ...] = ("conv3_block4_out",)  # gradient-ascent patterns
    filter_indices: tuple[int, ...] = (0, 1, 2, 3)  # channels of each filter layer
    ascent_steps: int = 30  # gradient-ascent iterations per filter
    ascent_lr: float = 3.0  # RMS change per pixel and step, in caffe-preprocessed units
    gradcam_layer: str = "auto"  # a layer name, or auto: the deepest block output at least
    gradcam_min_side: int = 4  # this many px wide (ResNet-50's conv5 is 1x1 at 32 px input)
    gradcam_images: int = 8  # test images overlaid, half correct and half wrong
    misclassified: int = 16  # most confidently wrong test images in the grid
    pairs_shown: int = 4  # most-confused class pairs drawn with examples
    pair_examples: int = 4  # example images per confused pair

    def __post_init__(self) -> None:
        check(self.dpi >= 30, "dpi", f"{self.dpi}: must be >= 30")
        for key in (
            "samples_per_class",
            "activation_channels",
            "ascent_steps",
            "gradcam_images",
            "misclassified",
            "pairs_shown",
            "pair_examples",
        ):
            v = getattr(self, key)
            check(1 <= v <= 256, key, f"{v} is out of range: must be 1..256")
        check(self.image_index >= 0, "image_index", "must be >= 0")
        check(self.ascent_lr > 0, "ascent_lr", "must be > 0")
        check(
            all(i >= 0 for i in self.filter_indices),
            "filter_indices",
            "channel numbers must be >= 0",
        )
        check(bool(self.activation_layers), "activation_layers", "name at least one layer")
        check(self.gradcam_min_side >= 1, "gradcam_min_side", "must be >= 1")


@dataclass(frozen=True)
class PublishParams:
    # Where runs go: a local folder (the default, so `make run` needs no server), file:///path
    # or s3://bucket/prefix. Layout: <dest>/runs/<run_id>/..., <dest>/champion.json.
    destination: str = "published"
    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO); None = AWS_ENDPOINT_URL / AWS
    profile: str | None = None  # AWS profile; None = env credentials / default chain
    run_id: str | None = None  # None = UTC time + short git commit; Airflow passes its run id
    artifacts: tuple[str, ...] = (
        "models/feature_extraction",
        "models/fine_tune",
        "metrics",
        "figures",
        "reports/report.html",
        "reports/validation",
    )
    model: str = "models/fine_tune"  # the model folder the champion gate scores and points at
    # compared on the test split (tasks.evaluate's definitions; recall_macro = balanced accuracy)
    metric: Literal["accuracy", "f1_macro", "recall_macro"] = "accuracy"
    min_improvement: float = 0.0  # the new model replaces the champion if it beats it by more
    batch_size: int = 64  # images per predict() call when scoring
    record: str = "reports/publish.json"  # what this run published and the gate's decision
    retries: int = 5  # attempts per S3 call, exponential backoff between them
    backoff: float = 1.0  # seconds before the 2nd attempt, doubling after each failure
    timeout: float = 30.0  # seconds to connect / read before an S3 attempt fails
    multipart_threshold_mb: int = 64  # files this large or larger go up in parts
    multipart_chunk_mb: int = 16  # part size (S3 minimum 5)

    def __post_init__(self) -> None:
        check(
            bool(self.destination.strip()),
            "destination",
            "give a folder, file:///path or s3://bucket/prefix",
        )
        check(
            self.run_id is None or _is_run_id(self.run_id),
            "run_id",
            f"{self.run_id!r}: use letters, digits and . _ - + only (it becomes a path)",
        )
        check(bool(self.artifacts), "artifacts", "list at least one file or folder")
        check(
            self.model in self.artifacts,
            "model",
            f"{self.model!r} must also be in publish.artifacts",
        )
        check(
            0 <= self.min_improvement < 1,
            "min_improvement",
            f"{self.min_improvement} is out of range: must be in [0, 1)",
        )
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.retries >= 1, "retries", "must be >= 1")
        check(self.backoff >= 0, "backoff", "must be >= 0")
        check(self.timeout > 0, "timeout", "must be > 0")
        check(
            self.multipart_chunk_mb >= 5,
            "multipart_chunk_mb",
            f"{self.multipart_chunk_mb}: S3 parts must be >= 5 MiB",
        )
        check(self.multipart_threshold_mb >= 5, "multipart_threshold_mb", "must be >= 5")


@dataclass(frozen=True)
class OrchestrationParams:
    dag_id: str = "resnet_retrain"
    owner: str = "ml-platform"
    schedule: str | None = "@weekly"  # cron or preset; None = on new data and manual only
    # Asset whose updates also trigger a run (data-aware): whoever lands new data emits it.
    dataset_asset: str = "file:///data/incoming/resnet-retrain"
    # Every run gets a copy of the project here; all copies share one DVC cache, so unchanged
    # stages are restored instead of re-run and a retried task resumes.
    workspace_dir: str = "airflow_home/workspaces"
    dvc_cache: str | None = None  # shared DVC cache; None = the project's .dvc/cache
    keep_workspace: bool = False  # keep a successful run's workspace (failed ones are kept)
    failure_dir: str = "airflow_home/failures"  # one JSON record per failed task try
    training_stages: tuple[str, ...] = ("backbone", "features", "train_*", "sweep")  # globs
    gpu_pool: str = "gpu"  # training tasks run in this pool (`make airflow` creates it)
    gpu_queue: str = "gpu"  # Celery queue of training tasks (docker/compose.yaml's GPU worker)
    gpu_pool_slots: int = 1  # pool size = training tasks at once
    retries: int = 2  # per task; the delay doubles after each failure
    retry_delay_s: float = 30.0
    max_retry_delay_s: float = 1800.0
    train_timeout_min: float = 360.0  # execution_timeout of training tasks
    stage_timeout_min: float = 60.0  # execution_timeout of the other stages
    max_active_runs: int = 1  # runs are isolated in workspaces, but share one GPU pool
    # UI form: these params.yaml keys become DAG Params (typed from this file); anything else
    # goes in the `overrides` list (KEY=VALUE). Keys that do not exist fail the DAG tests.
    run_params: tuple[str, ...] = (
        "data.source",
        "data.path",
        "prepare.image_size",
        "backbone.weights",
        "train.strategy",
        "train.image_size",
        "train.epochs",
        "train.learning_rate",
        "train.unfreeze",
        "train.fine_tune.epochs",
        "train.fine_tune.learning_rate",
        "train.sweep.unfreeze",
        "publish.min_improvement",
    )
    aws_conn_id: str | None = "aws_default"  # Airflow connection for S3; None/missing = env
    dvc_push: bool = True  # push data and models to the DVC remote (skipped if none set)
    training_executor: Literal["local", "kubernetes"] = "local"  # kubernetes: one GPU pod each
    trainer_image: str = "resnet-retrain-trainer:latest"  # docker/ builds it
    kubernetes_namespace: str = "airflow"
    kubernetes_secret: str = "resnet-retrain-s3"  # AWS_* keys for the DVC remote and publish
    kubernetes_gpus: int = 1  # GPUs per training pod (limit)
    kubernetes_gpu_resource: str = "nvidia.com/gpu"
    kubernetes_memory: str = "16Gi"  # memory limit per training pod

    def __post_init__(self) -> None:
        check(_is_run_id(self.dag_id), "dag_id", "use letters, digits and . _ - only")
        check(bool(self.dataset_asset.strip()), "dataset_asset", "give an asset URI")
        check(self.gpu_pool_slots >= 1, "gpu_pool_slots", "must be >= 1")
        check(self.retries >= 0, "retries", "must be >= 0")
        check(self.retry_delay_s > 0, "retry_delay_s", "must be > 0")
        check(
            self.max_retry_delay_s >= self.retry_delay_s,
            "max_retry_delay_s",
            "must be >= retry_delay_s",
        )
        check(self.train_timeout_min > 0, "train_timeout_min", "must be > 0")
        check(self.stage_timeout_min > 0, "stage_timeout_min", "must be > 0")
        check(self.max_active_runs >= 1, "max_active_runs", "must be >= 1")
        check(self.kubernetes_gpus >= 0, "kubernetes_gpus", "must be >= 0")
        check(bool(self.trainer_image.strip()), "trainer_image", "give an image reference")


def _is_run_id(s: str) -> bool:
    return bool(s) and all(c.isalnum() or c in "._-+" for c in s) and not s.startswith(".")


# --- the whole file -------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    validate: ValidateParams = field(default_factory=ValidateParams)
    backbone: BackboneParams = field(default_factory=BackboneParams)
    train: TrainParams = field(default_factory=TrainParams)
    audit: AuditParams = field(default_factory=AuditParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    visualize: VisualizeParams = field(default_factory=VisualizeParams)
    publish: PublishParams = field(default_factory=PublishParams)
    orchestration: OrchestrationParams = field(default_factory=OrchestrationParams)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_params(
    path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None
) -> Params:
    """Read, type-check and range-check params.yaml (plus dotted `overrides`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: params file not found (run from the project root or pass --params PATH)"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        return build(Params, raw, "")
    except ParamsError as e:
        raise UserError(f"{path}: {e}") from None


def build(cls: type, raw: Any, key: str) -> Any:
    """Build dataclass `cls` from a plain mapping, checking keys, types and ranges."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(key, f"expected a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = f"{key}." if key else ""
        raise ParamsError(
            f"{where}{unknown[0]}",
            f"unknown key; allowed keys{' in ' + key if key else ''}: {', '.join(names)}",
        )
    values = {n: coerce(raw[n], hints[n], _join(key, n)) for n in names if n in raw}
    try:
        return cls(**values)
    except ParamsError as e:
        raise ParamsError(_join(key, e.key), e.message) from None


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against type hint `tp`; return it in the dataclass's form."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        options = [a for a in get_args(tp) if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message is the clearest
            return coerce(value, options[0], key)
        for arg in options:
            try:
                return coerce(value, arg, key)
            except ParamsError:
                continue
        raise ParamsError(key, f"{value!r} is not {describe(tp)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value in allowed:
            return value
        raise ParamsError(
            key, f"{value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}"
        )
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ParamsError(key, f"{value!r} is not a list")
        inner = get_args(tp)[0] if get_args(tp) else Any
        return tuple(coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(key, f"{value!r} is not a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"params.py: unsupported type hint {tp!r} for {key}")
    raise ParamsError(key, f"{value!r} is not {describe(tp)}")


def describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(map(str, get_args(tp)))
    if origin in (tuple, list):
        return "a list"
    if tp is type(None):
        return "null"
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["train.epochs=3", "prepare.exclude=[ship]"]` -> {dotted key: YAML-parsed value}."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. prepare.image_size=64")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {dotted}: {p} is not a section")
    node[last] = value


def _join(a: str, b: str) -> str:
    return f"{a}.{b}" if a and b else a or b


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in s)


def params_from_cli(doc: str | None, argv: list[str] | None = None) -> Params:
    """The command line every stage shares: `--params FILE` and `--set KEY=VALUE`."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--params", default=str(DEFAULT_PARAMS), help="params file")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one param, e.g. --set prepare.image_size=64",
    )
    args = parser.parse_args(argv)
    return load_params(args.params, parse_overrides(args.set))
