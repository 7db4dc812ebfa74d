"""Typed, frozen view of params.yaml: one pydantic model, one loader, one error format.

params.yaml holds every value (DVC tracks it; its comments explain each key). The sections
below declare only types, ranges and a short description per key, never a default: a key
missing from params.yaml is an error. A bad value fails before any work with one line that
names the key and what is allowed, e.g.

    params.yaml: prepare.fraction: -0.5 is out of range: must be null or in (0, 1]

Values are read with YAML 1.2's float rule, so `1e-4` and `3e-05` are numbers (PyYAML's
YAML 1.1 rule reads them as strings).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from tasks.common import UserError

DEFAULT_PARAMS = Path("params.yaml")
PROJECT_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"  # section()'s values
SECTION = ConfigDict(extra="forbid")  # + frozen=True on each: a typo is an error, not a no-op


class ParamsError(UserError):
    """A bad value in params.yaml; `key` is the dotted path to it."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}" if key else message)


def check(ok: bool, key: str, message: str) -> None:
    """Fail validation for `key` (relative to the section) unless `ok`; for cross-key rules."""
    if not ok:
        raise PydanticCustomError("params", message, {"key": key})


# Strict scalars: YAML `true` is not an integer, `"5"` not a number (an int is a float).
Int, Float, Str, Bool = StrictInt, StrictFloat, StrictStr, StrictBool


def _is_run_id(s: str) -> bool:
    return bool(s) and all(c.isalnum() or c in "._-+" for c in s) and not s.startswith(".")


# --- section: data (where a dataset comes from) -------------------------------------------


@dataclass(frozen=True, config=SECTION)
class DataParams:
    source: Literal["digits", "cifar10", "cifar100", "imagewoof", "folder"] = Field(
        description="dataset: digits (embedded, no network), cifar10, cifar100, imagewoof, folder"
    )
    url: Str | None = Field(description="archive URL override (a mirror); null = official")
    md5: Str | None = Field(description="md5 of the archive at `url`; null = official")
    path: Str | None = Field(description="folder source: local folder or s3://bucket/prefix")
    s3_endpoint_url: Str | None = Field(description="S3-compatible endpoint; null = AWS")
    cache_dir: Str = Field(description="downloaded archives, reused while their md5 matches")
    raw_dir: Str = Field(description="fetch output (DVC out)")
    prepared_dir: Str = Field(description="prepare output (DVC out)")
    download_retries: Int = Field(ge=1, description="attempts per download, >= 1")
    download_timeout: Float = Field(gt=0, description="seconds without a byte, > 0")
    download_backoff: Float = Field(ge=0, description="seconds before the 2nd attempt")

    @model_validator(mode="after")
    def _rules(self) -> DataParams:
        check(
            self.source != "folder" or bool(self.path),
            "path",
            "the folder source needs data.path (a local folder or s3://bucket/prefix)",
        )
        check(
            self.md5 is None or re.fullmatch(r"[0-9a-fA-F]{32}", self.md5) is not None,
            "md5",
            f"{self.md5!r} is not a 32-digit hex md5",
        )
        return self


# --- section: prepare (decode, filter, subsample, split) -----------------------------------


@dataclass(frozen=True, config=SECTION)
class PrepareParams:
    image_size: Int | None = Field(
        ge=8, le=1024, description="output side in px, 8..1024; null = native (CIFAR 32, digits 8)"
    )
    resize: Literal["squash", "crop", "pad"] = Field(
        description="how a non-square image becomes square"
    )
    include: tuple[Str, ...] = Field(description="class names to keep; empty = all")
    exclude: tuple[Str, ...] = Field(description="class names to drop, e.g. [ship]")
    max_per_class: Int | None = Field(
        ge=1, description="cap per class in each official split; null = no cap"
    )
    fraction: Float | None = Field(
        gt=0, le=1, description="share of each class kept in each split, (0, 1]; null = all"
    )
    val_fraction: Float = Field(ge=0, lt=1, description="validation share of train, [0, 1)")
    test_fraction: Float = Field(
        gt=0, lt=1, description="test share, (0, 1); only for sources without a test split"
    )
    seed: Int = Field(description="one seed for subsampling and splitting")
    workers: Int = Field(ge=0, description="image decoding threads; 0 = one per core")

    @model_validator(mode="after")
    def _rules(self) -> PrepareParams:
        check(not (self.include and self.exclude), "include", "give include or exclude, not both")
        both = set(self.include) & set(self.exclude)
        check(not both, "exclude", f"{sorted(both)} also in include")
        return self


# --- section: validate (tasks/validate.py) --------------------------------------------------
# What is checked lives in the suites (expectations/*.json); how strict lives here: a suite
# names these keys as {"$PARAMETER": "<key>"}, filled in at run time.

Split = Literal["train", "val", "test"]


@dataclass(frozen=True, config=SECTION)
class ValidateParams:
    expectations_dir: Str = Field(description="every *.json suite in it is run")
    out_dir: Str = Field(description="summary.json, index.html, results.json + docs/ (GX)")
    min_per_class: Int = Field(ge=1, description="images of every class in every split")
    min_class_ratio: Float = Field(
        ge=0, le=1, description="smallest class / largest class in every split, [0, 1]"
    )
    max_quarantine_share: Float = Field(
        ge=0, le=1, description="unreadable files / all files in every split, [0, 1]"
    )
    min_pixel_range: Int = Field(
        ge=0, le=255, description="max - min pixel value below which an image is constant"
    )
    splits: tuple[Split, ...] = Field(description="splits that must exist and hold images")
    severity: dict[Str, Literal["error", "warning"]] = Field(
        description="per expectation: error (stops the run) or warning (reported)"
    )
    examples: Int = Field(ge=1, le=100, description="failing rows shown per check, 1..100")

    @model_validator(mode="after")
    def _rules(self) -> ValidateParams:
        check(len(set(self.splits)) == len(self.splits), "splits", "lists a split twice")
        return self


# --- sections: backbone and train (tasks/backbone.py, tasks/features.py, tasks/train.py) ---

RESNET50_LAYERS = 175  # layers of the ResNet-50 base below its input (include_top=False, avg)
RESNET50_STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")


def _unfreeze(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= RESNET50_LAYERS:
            raise PydanticCustomError(
                "params",
                f"{value} is out of range: ResNet-50 has {RESNET50_LAYERS} layers; "
                f"give 0..{RESNET50_LAYERS}, a stage name or all",
            )
        return value
    if value == "all" or value in RESNET50_STAGES:
        return value
    raise PydanticCustomError(
        "params",
        f"{value!r} is not a layer count, a stage name ({', '.join(RESNET50_STAGES)}) or all",
    )


# a top-layer count, a stage name from RESNET50_STAGES (that stage and above), or "all"
Unfreeze = Annotated[
    int | str,
    PlainValidator(_unfreeze),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": RESNET50_LAYERS},
                {"enum": [*RESNET50_STAGES, "all"]},
            ]
        }
    ),
]
Fraction01 = Annotated[Float, Field(ge=0, lt=1)]


def _layers_or_auto(value: Any) -> str | tuple[str, ...]:
    if value == "auto":
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PydanticCustomError(
        "params", f"name at least one layer in a list, or give auto (got {value!r})"
    )


# "auto" (the figure picks layers by the run's image size) or a non-empty list of layer names
LayersOrAuto = Annotated[
    str | tuple[str, ...],
    PlainValidator(_layers_or_auto),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": ["auto"]},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ]
        }
    ),
]


@dataclass(frozen=True, config=SECTION)
class BackboneParams:
    weights: Str = Field(
        description="source (trained here without `holdout`) | imagenet | none | a weights "
        "file path or s3:// URI"
    )
    holdout: tuple[Str, ...] = Field(
        description="source: classes the source model never sees (the 'ship' role)"
    )
    out_dir: Str = Field(description="backbone.weights.h5, backbone.json (+ model.keras)")
    epochs: Int = Field(ge=1, description="source model: epochs at most")
    learning_rate: Float = Field(gt=0, lt=1, description="source model (Adam), (0, 1)")
    batch_size: Int = Field(ge=1, description="source model: images per step")
    patience: Int = Field(ge=1, description="source model: early stopping on val loss")
    bn_momentum: Float = Field(
        gt=0, lt=1, description="source model's BatchNorm momentum, (0, 1); 0.99 lags on small sets"
    )
    min_val_accuracy: Float = Field(
        ge=0, le=1, description="fail the stage when the source model validates below this"
    )
    target_val_accuracy: Float | None = Field(
        gt=0, le=1, description="source model: stop at the first epoch this good; null = all"
    )

    @model_validator(mode="after")
    def _rules(self) -> BackboneParams:
        check(bool(self.weights.strip()), "weights", "give source, imagenet, none or a path")
        check(
            self.weights != "source" or bool(self.holdout),
            "holdout",
            "the source model needs at least one held-out class",
        )
        return self


@dataclass(frozen=True, config=SECTION)
class AugmentParams:
    enabled: Bool = Field(description="Keras random layers in the model, training only")
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = Field(
        description="random flips (not for digits)"
    )
    translate: Fraction01 = Field(description="max shift, share of the side, [0, 1); 0 = off")
    rotation: Fraction01 = Field(description="max rotation, share of a full turn, [0, 1)")
    zoom: Fraction01 = Field(description="max zoom in/out, share of the side, [0, 1)")
    contrast: Fraction01 = Field(description="max contrast change factor, [0, 1)")
    fill_mode: Literal["constant", "reflect", "nearest", "wrap"] = Field(
        description="how uncovered pixels are filled (constant = black)"
    )


@dataclass(frozen=True, config=SECTION)
class FineTuneParams:
    learning_rate: Float = Field(gt=0, lt=1, description="phase 2, (0, 1): small")
    epochs: Int = Field(ge=0, description="phase 2 epochs at most")
    schedule: Literal["cosine", "plateau"] = Field(
        description="cosine: warm-up, then cosine decay to min_lr; plateau: as phase 1"
    )
    warmup_epochs: Int = Field(ge=0, description="cosine: epochs of linear warm-up")


@dataclass(frozen=True, config=SECTION)
class SweepParams:
    unfreeze: tuple[Unfreeze, ...] = Field(
        min_length=1, description="`dvc repro sweep`: one fine_tune per top-N layer count"
    )
    augment: tuple[Bool, ...] = Field(
        min_length=1, description="each N without (false) and with (true) augmentation"
    )


@dataclass(frozen=True, config=SECTION)
class TrainParams:
    strategy: Literal["feature_extraction", "fine_tune", "sweep"] = Field(
        description="dvc.yaml sets it per stage"
    )
    image_size: Int = Field(
        ge=32, le=1024, description="side the backbone sees (resized in the model), 32..1024 px"
    )
    units: tuple[Annotated[Int, Field(ge=1)], ...] = Field(
        description="hidden Dense layers of the head; [] = softmax only"
    )
    activation: Str = Field(description="of the hidden Dense layers")
    dropout: Fraction01 = Field(description="before each Dense of the head, [0, 1)")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field(
        description="phase 1 and 2 optimizer (sgd: momentum 0.9)"
    )
    learning_rate: Float = Field(gt=0, lt=1, description="phase 1 (head), (0, 1)")
    batch_size: Int = Field(ge=1, description="global batch (split across GPUs)")
    epochs: Int = Field(ge=1, description="phase 1 epochs at most")
    label_smoothing: Fraction01 = Field(description="label smoothing of the loss, [0, 1)")
    patience: Int = Field(ge=1, description="early stopping on val loss, in epochs")
    reduce_lr_patience: Int = Field(ge=1, description="epochs before lr *= factor")
    reduce_lr_factor: Float = Field(gt=0, lt=1, description="lr factor on a plateau")
    min_lr: Float = Field(ge=0, description="lr floor, below learning_rate")
    unfreeze: Unfreeze = Field(
        description="phase 2: top N layers (0..175), a stage (conv1..conv5) and above, or all"
    )
    fine_tune: FineTuneParams = Field(description="phase 2 (unfrozen layers)")
    augment: AugmentParams = Field(description="random augmentation inside the model")
    sweep: SweepParams = Field(description="the unfreezing sweep")
    features_dir: Str = Field(description="cached embeddings (features stage)")
    models_dir: Str = Field(description="<strategy>/ and sweep/unfreeze-N-aug-X/ inside")
    checkpoint_dir: Str = Field(description="resume state, removed on success")
    seed: Int = Field(description="weights init, shuffling, dropout, augmentation")
    mixed_precision: Literal["auto", "off", "mixed_float16", "mixed_bfloat16"] = Field(
        description="auto: bf16 on Ampere+, fp16 on Volta/Turing, off on CPU"
    )
    xla: Literal["auto", "on", "off"] = Field(description="XLA compilation; auto = on")
    distribute: Literal["auto", "off", "mirrored"] = Field(
        description="auto: MirroredStrategy with > 1 GPU"
    )

    @model_validator(mode="after")
    def _rules(self) -> TrainParams:
        check(self.min_lr < self.learning_rate, "min_lr", "must be in [0, learning_rate)")
        return self


# --- section: audit (checks on the cached embeddings) ---------------------------------------


@dataclass(frozen=True, config=SECTION)
class AuditParams:
    out_dir: Str = Field(description="summary.json (DVC metrics), CSVs, PNGs")
    near_duplicate_similarity: Float = Field(
        gt=0, le=1, description="centred cosine at or above which two images are near-duplicates"
    )
    hash_max_distance: Int = Field(ge=0, le=64, description="dHash bits (of 64) that may differ")
    max_near_duplicate_share: Float = Field(
        ge=0, le=1, description="val/test share with a near-duplicate in an earlier split"
    )
    near_duplicate_severity: Literal["error", "warning"] = Field(
        description="error stops the run; warning reports"
    )
    label_folds: Int = Field(ge=2, le=20, description="folds of the out-of-fold probabilities")
    label_top_per_class: Int = Field(ge=1, description="label suspects listed per class")
    reference_features: Str | None = Field(description="the champion's features/; null = no drift")
    reference_prepared: Str | None = Field(description="the champion's data/prepared/")
    drift_samples: Int = Field(ge=10, description="embeddings per side in the MMD test")
    drift_permutations: Int = Field(ge=19, description="permutation-test draws")
    drift_alpha: Float = Field(gt=0, lt=1, description="p-value below which data drifted")
    max_channel_shift: Float = Field(gt=0, description="mean pixel change (0..255) that drifts")
    pairs_shown: Int = Field(ge=1, le=256, description="near-duplicate pairs drawn")
    seed: Int = Field(description="folds, subsamples, permutations")

    @model_validator(mode="after")
    def _rules(self) -> AuditParams:
        check(
            (self.reference_features is None) == (self.reference_prepared is None),
            "reference_prepared",
            "give reference_features and reference_prepared together (or neither)",
        )
        return self


# --- sections: evaluate, visualize ----------------------------------------------------------

Count = Annotated[Int, Field(ge=1, le=256)]


@dataclass(frozen=True, config=SECTION)
class EvaluateParams:
    models: tuple[Str, ...] = Field(
        min_length=1, description="folders in train.models_dir to score; globs allowed"
    )
    split: Literal["test", "val"] = Field(description="held-out split the metrics are measured on")
    out_dir: Str = Field(description="metrics.json (DVC metrics) + per-model plot data")
    batch_size: Int = Field(ge=1, description="images per predict() call")
    top_k: Int = Field(ge=2, description="top-k accuracy, when there are more classes")
    confused_pairs: Int = Field(ge=1, description="most-confused pairs in the table")


@dataclass(frozen=True, config=SECTION)
class VisualizeParams:
    models: tuple[Str, ...] = Field(description="in train.models_dir, drawn one by one")
    source_model: Bool = Field(description="also draw the source classifier if present")
    out_dir: Str = Field(description="one PNG per figure")
    report: Str = Field(description="self-contained HTML report (figures embedded)")
    validation_summary: Str = Field(description="validation summary shown if present")
    seed: Int = Field(description="which samples and images are drawn")
    dpi: Int = Field(ge=30, description="PNG resolution, >= 30")
    samples_per_class: Count = Field(description="EDA grid columns, 1..256")
    image_index: Int = Field(ge=0, description="test image for activations")
    activation_layers: LayersOrAuto = Field(
        description="layers whose feature maps are drawn, or auto: per stage the deepest "
        "block output at least min_map_side px"
    )
    min_map_side: Int = Field(ge=1, description="auto activation layers: maps at least this wide")
    activation_channels: Count = Field(description="feature maps per layer and model, 1..256")
    first_conv_layer: Str = Field(description="its kernels are drawn as RGB tiles")
    filter_layers: tuple[Str, ...] = Field(description="gradient-ascent pattern layers")
    filter_indices: tuple[Annotated[Int, Field(ge=0)], ...] = Field(
        description="channels drawn of each filter layer"
    )
    ascent_steps: Count = Field(description="gradient-ascent iterations per filter, 1..256")
    ascent_lr: Float = Field(gt=0, description="Adam rate on the pattern's 1/f spectrum, > 0")
    ascent_jitter: Int = Field(ge=0, description="px: random shift of the pattern per step")
    ascent_decay: Float = Field(ge=0, description="L2 penalty on the pattern's distance from grey")
    gradcam_layer: Str = Field(description="a layer name, or auto: the deepest block output")
    gradcam_min_side: Int = Field(ge=1, description="auto: at least this many px wide")
    gradcam_images: Count = Field(description="test images overlaid, half correct, half wrong")
    misclassified: Count = Field(description="most confidently wrong test images, 1..256")
    pairs_shown: Count = Field(description="most-confused class pairs drawn, 1..256")
    pair_examples: Count = Field(description="example images per pair, 1..256")


# --- sections: publish, orchestration -------------------------------------------------------


@dataclass(frozen=True, config=SECTION)
class PublishParams:
    destination: Str = Field(
        description="local folder | file:///path | s3://bucket/prefix (runs/ + champion.json)"
    )
    endpoint_url: Str | None = Field(description="S3-compatible endpoint; null = AWS")
    profile: Str | None = Field(description="AWS profile; null = env / default chain")
    run_id: Str | None = Field(description="null = UTC time + short git commit")
    artifacts: tuple[Str, ...] = Field(
        min_length=1, description="files/folders uploaded under runs/<run_id>/"
    )
    model: Str = Field(description="the model the champion gate scores (in artifacts)")
    metric: Literal["accuracy", "f1_macro", "recall_macro"] = Field(
        description="the champion gate's metric, on the test split"
    )
    min_improvement: Fraction01 = Field(
        description="replace the champion only if better by more than this, [0, 1)"
    )
    batch_size: Int = Field(ge=1, description="images per predict() call when scoring")
    record: Str = Field(description="what was published and the gate's decision")
    retries: Int = Field(ge=1, description="attempts per S3 call")
    backoff: Float = Field(ge=0, description="seconds before the 2nd attempt, doubling")
    timeout: Float = Field(gt=0, description="seconds to connect/read per attempt")
    multipart_threshold_mb: Int = Field(ge=5, description="files this large go in parts")
    multipart_chunk_mb: Int = Field(description="part size in MiB (S3 minimum 5)")

    @model_validator(mode="after")
    def _rules(self) -> PublishParams:
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
        check(
            self.model in self.artifacts,
            "model",
            f"{self.model!r} must also be in publish.artifacts",
        )
        check(
            self.multipart_chunk_mb >= 5,
            "multipart_chunk_mb",
            f"{self.multipart_chunk_mb}: S3 parts must be >= 5 MiB",
        )
        return self


@dataclass(frozen=True, config=SECTION)
class ExportParams:
    models: tuple[Str, ...] = Field(
        min_length=1, description="model folders exported for serving -> <out_dir>/<name>/"
    )
    formats: tuple[Literal["saved_model", "onnx", "tflite"], ...] = Field(
        min_length=1, description="formats written; one that cannot be produced fails the stage"
    )
    out_dir: Str = Field(description="exports/<model>/: saved_model/, model.onnx, ...")
    parity_images: Int = Field(ge=1, description="test images each format must agree on")
    atol: Fraction01 = Field(description="max |probability difference| per image, [0, 1)")
    latency_repeats: Int = Field(ge=1, description="timed calls per speed figure (median)")
    throughput_batch: Int = Field(ge=1, description="images per call for throughput")

    @model_validator(mode="after")
    def _rules(self) -> ExportParams:
        check(len(set(self.formats)) == len(self.formats), "formats", "list each format once")
        return self


@dataclass(frozen=True, config=SECTION)
class OrchestrationParams:
    dag_id: Str = Field(description="the Airflow DAG id")
    owner: Str = Field(description="the DAG's owner")
    schedule: Str | None = Field(description="cron or preset; null = new data / manual")
    dataset_asset: Str = Field(description="an update of this Asset triggers a run")
    workspace_dir: Str = Field(description="one project copy per run")
    dvc_cache: Str | None = Field(description="shared DVC cache; null = .dvc/cache")
    keep_workspace: Bool = Field(description="keep a successful run's workspace")
    failure_dir: Str = Field(description="one JSON record per failed task try")
    gpu_pool: Str = Field(description="pool of the training tasks")
    gpu_queue: Str = Field(description="Celery queue of the training tasks")
    gpu_pool_slots: Int = Field(ge=1, description="training tasks at once")
    retries: Int = Field(ge=0, description="per task; the delay doubles each time")
    retry_delay_s: Float = Field(gt=0, description="first retry delay, seconds")
    max_retry_delay_s: Float = Field(gt=0, description="longest retry delay, seconds")
    train_timeout_min: Float = Field(gt=0, description="timeout of training tasks, min")
    stage_timeout_min: Float = Field(gt=0, description="timeout of other tasks, min")
    max_active_runs: Int = Field(ge=1, description="runs at once")
    run_params: tuple[Str, ...] = Field(description="params.yaml keys in the trigger form")
    aws_conn_id: Str | None = Field(description="Airflow connection for S3; null = env")
    dvc_push: Bool = Field(description="push data and models to the DVC remote")
    training_executor: Literal["local", "kubernetes"] = Field(
        description="kubernetes: training stages as GPU pods"
    )
    trainer_image: Str = Field(description="image of the training pods")
    kubernetes_namespace: Str = Field(description="namespace of the training pods")
    kubernetes_secret: Str = Field(description="Secret with the AWS_* keys")
    kubernetes_gpus: Int = Field(ge=0, description="GPU limit per training pod")
    kubernetes_gpu_resource: Str = Field(description="GPU resource name")
    kubernetes_memory: Str = Field(description="memory limit per training pod")

    @model_validator(mode="after")
    def _rules(self) -> OrchestrationParams:
        check(_is_run_id(self.dag_id), "dag_id", "use letters, digits and . _ - only")
        check(bool(self.dataset_asset.strip()), "dataset_asset", "give an asset URI")
        check(
            self.max_retry_delay_s >= self.retry_delay_s,
            "max_retry_delay_s",
            "must be >= retry_delay_s",
        )
        check(bool(self.trainer_image.strip()), "trainer_image", "give an image reference")
        return self


# --- the whole file -------------------------------------------------------------------------


@dataclass(frozen=True, config=SECTION)
class Params:
    data: DataParams = Field(description="where a dataset comes from")
    prepare: PrepareParams = Field(description="decode, filter, subsample, split")
    validate: ValidateParams = Field(description="data checks")
    backbone: BackboneParams = Field(description="the ResNet-50 base")
    train: TrainParams = Field(description="transfer learning")
    audit: AuditParams = Field(description="near-duplicates, label issues, drift")
    evaluate: EvaluateParams = Field(description="metrics")
    visualize: VisualizeParams = Field(description="figures and report")
    publish: PublishParams = Field(description="runs and the champion in object storage")
    export: ExportParams = Field(description="serving formats with parity checks")
    orchestration: OrchestrationParams = Field(description="the Airflow DAG")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PARAMS = TypeAdapter(Params)


# --- reading: YAML 1.2 floats, dotted overrides, one-line errors ----------------------------


# libyaml's parser when present: the DAG file reads params.yaml at every parse
class YAML12Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader with YAML 1.2's float rule: `1e-4`, `3e-05`, `-2E+3` are numbers."""


_FLOAT = "tag:yaml.org,2002:float"
YAML12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in rules if tag != _FLOAT]
    for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YAML12Loader.add_implicit_resolver(  # after int, so `12` stays an int: a dot or an exponent
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=YAML12Loader)  # noqa: S506 (a SafeLoader)


def read_raw(path: str | Path) -> dict[str, Any]:
    """params.yaml as plain data (YAML 1.2 floats), or a UserError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path}: params file not found (run from the project root or pass --params PATH)"
        )
    try:
        raw = read_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections")
    return raw


def with_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of `raw` with each dotted key (`train.fine_tune.epochs`) set; tuples as lists."""
    out = copy.deepcopy(raw)
    for dotted, value in (overrides or {}).items():
        *parents, last = dotted.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {dotted}: {p} is not a section")
        node[last] = list(value) if isinstance(value, tuple) else value
    return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["train.epochs=3", "prepare.exclude=[ship]"]` -> {dotted key: YAML-parsed value}."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. prepare.image_size=64")
        k, v = item.split("=", 1)
        out[k.strip()] = read_yaml(v)
    return out


def validate(raw: dict[str, Any]) -> Params:
    """Params from plain data; a ParamsError naming the (first) bad key."""
    try:
        return PARAMS.validate_python(raw)
    except ValidationError as e:
        raise params_error(e) from None


def load_params(
    path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None
) -> Params:
    """Read, type-check and range-check params.yaml (plus dotted `overrides`)."""
    try:
        return validate(with_overrides(read_raw(path), overrides))
    except ParamsError as e:
        raise UserError(f"{path}: {e}") from None


def build(cls: type, raw: Any, key: str = "") -> Params:
    """Deprecated: `validate(raw)` for dags/retrain.py (`cls` is Params) until it calls
    load_params(), which also reads YAML 1.2 floats."""
    return validate(raw)


def section(name: str, **overrides: Any) -> Any:
    """One section with the project's params.yaml values, `overrides` applied and checked.

    For tests and benchmarks: `section("prepare", image_size=16)` is a PrepareParams.
    """
    dotted = {f"{name}.{k}": v for k, v in overrides.items()}
    return getattr(load_params(PROJECT_PARAMS, dotted), name)


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


# --- pydantic's ValidationError as one line --------------------------------------------------

_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
}
_RANGE = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_BOUNDS = ("ge", "gt", "le", "lt")


def params_error(e: ValidationError) -> ParamsError:
    """The first error (an unknown key before the rest) as `key: what is allowed`."""
    err = sorted(e.errors(), key=lambda x: x["type"] != "unexpected_keyword_argument")[0]
    kind, loc, value, ctx = err["type"], list(err["loc"]), err["input"], err.get("ctx") or {}
    if kind == "params":  # check() / _unfreeze: the message is written out
        return ParamsError(_dotted([*loc, *([ctx["key"]] if "key" in ctx else [])]), err["msg"])
    key = _dotted(loc)
    if kind == "unexpected_keyword_argument":
        where = _dotted(loc[:-1])
        names = [f.name for f in dataclasses.fields(_field_type(loc[:-1]))]
        within = f" in {where}" if where else ""
        return ParamsError(key, f"unknown key; allowed keys{within}: {', '.join(names)}")
    if kind == "missing":
        return ParamsError(key, "missing: params.yaml must set every key")
    if kind in _RANGE:
        integer = not isinstance(next(iter(ctx.values())), float)
        shown = value if integer else float(value)
        return ParamsError(key, f"{shown} is out of range: must be {_rule(loc, ctx, integer)}")
    if kind == "literal_error":
        return ParamsError(key, f"{value!r} is not allowed; allowed values: {ctx['expected']}")
    if kind == "too_short":
        return ParamsError(key, "name at least one value")
    if kind in _EXPECTED:
        return ParamsError(key, f"{value!r} is not {_EXPECTED[kind]}")
    return ParamsError(key, f"{value!r}: {err['msg']}")


def _dotted(loc: list) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _field_type(loc: list) -> Any:
    tp: Any = Params
    for part in loc:
        tp = tp.__pydantic_fields__[part].annotation
    return tp


def _rule(loc: list, ctx: dict, integer: bool) -> str:
    """`in (0, 1]`, `8..1024`, `>= 1`: the field's whole range, not just the broken bound."""
    try:
        section, name = _field_type(loc[:-1]), loc[-1]
        info = section.__pydantic_fields__[name]
        bounds = {b: getattr(m, b) for m in info.metadata for b in _BOUNDS if hasattr(m, b)}
        nullable = type(None) in get_args(info.annotation)
    except (AttributeError, KeyError, TypeError):  # a list item: its own bound only
        bounds, nullable = dict(ctx), False
    lo = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    hi = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    if lo and hi:
        rule = (
            f"{lo[1]}..{hi[0]}"
            if integer and lo[0] + hi[1] == "[]"
            else f"in {lo[0]}{lo[1]:g}, {hi[0]:g}{hi[1]}"
        )
    elif lo:
        rule = f"{'>=' if lo[0] == '[' else '>'} {lo[1]:g}"
    else:
        rule = f"{'<=' if hi[1] == ']' else '<'} {hi[0]:g}"
    return f"null or {rule}" if nullable else rule
