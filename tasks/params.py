"""Typed, frozen view of params.yaml: the sections, one loader, one error format.

params.yaml holds every value and, in each key's trailing comment, what it means (the only
place: the trigger form reads them too, tasks.paramfile.descriptions). The sections below
declare only types and ranges, never a default or a description: a key missing from
params.yaml is an error. A bad value fails before any work with one line that
names the key and what is allowed, e.g.

    params.yaml: prepare.fraction: -0.5 is out of range: must be null or in (0, 1]

Reading the file (YAML 1.2 floats, `--set` overrides) and that one line are tasks/paramfile.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, Literal

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
from tasks.paramfile import (
    ParamsError,
    check,
    params_error,
    parse_overrides,
    read_raw,
    with_overrides,
)

DEFAULT_PARAMS = Path("params.yaml")
PROJECT_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"  # section()'s values
SECTION = ConfigDict(extra="forbid")  # + frozen=True on each: a typo is an error, not a no-op
# and kw_only=True: a key with a range (`= Field(ge=1)`) may come before one without


# Strict scalars: YAML `true` is not an integer, `"5"` not a number (an int is a float).
Int, Float, Str, Bool = StrictInt, StrictFloat, StrictStr, StrictBool


def _is_run_id(s: str) -> bool:
    return bool(s) and all(c.isalnum() or c in "._-+" for c in s) and not s.startswith(".")


# --- section: data (where a dataset comes from) -------------------------------------------


@dataclass(frozen=True, kw_only=True, config=SECTION)
class DataParams:
    source: Literal["digits", "cifar10", "cifar100", "imagewoof", "folder"]
    url: Str | None
    md5: Str | None
    path: Str | None
    s3_endpoint_url: Str | None
    cache_dir: Str
    raw_dir: Str
    prepared_dir: Str
    download_retries: Int = Field(ge=1)
    download_timeout: Float = Field(gt=0)
    download_backoff: Float = Field(ge=0)

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


@dataclass(frozen=True, kw_only=True, config=SECTION)
class PrepareParams:
    image_size: Int | None = Field(ge=8, le=1024)
    resize: Literal["squash", "crop", "pad"]
    include: tuple[Str, ...]
    exclude: tuple[Str, ...]
    max_per_class: Int | None = Field(ge=1)
    fraction: Float | None = Field(gt=0, le=1)
    val_fraction: Float = Field(ge=0, lt=1)
    test_fraction: Float = Field(gt=0, lt=1)
    seed: Int
    workers: Int = Field(ge=0)

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


@dataclass(frozen=True, kw_only=True, config=SECTION)
class ValidateParams:
    expectations_dir: Str
    out_dir: Str
    min_per_class: Int = Field(ge=1)
    min_class_ratio: Float = Field(ge=0, le=1)
    max_quarantine_share: Float = Field(ge=0, le=1)
    min_pixel_range: Int = Field(ge=0, le=255)
    splits: tuple[Split, ...]
    severity: dict[Str, Literal["error", "warning"]]
    examples: Int = Field(ge=1, le=100)

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


@dataclass(frozen=True, kw_only=True, config=SECTION)
class BackboneParams:
    weights: Str
    holdout: tuple[Str, ...]
    out_dir: Str
    epochs: Int = Field(ge=1)
    learning_rate: Float = Field(gt=0, lt=1)
    batch_size: Int = Field(ge=1)
    patience: Int = Field(ge=1)
    bn_momentum: Float = Field(gt=0, lt=1)
    min_val_accuracy: Float = Field(ge=0, le=1)
    target_val_accuracy: Float | None = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _rules(self) -> BackboneParams:
        check(bool(self.weights.strip()), "weights", "give source, imagenet, none or a path")
        check(
            self.weights != "source" or bool(self.holdout),
            "holdout",
            "the source model needs at least one held-out class",
        )
        return self


@dataclass(frozen=True, kw_only=True, config=SECTION)
class AugmentParams:
    enabled: Bool
    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"]
    translate: Fraction01
    rotation: Fraction01
    zoom: Fraction01
    contrast: Fraction01
    fill_mode: Literal["constant", "reflect", "nearest", "wrap"]


@dataclass(frozen=True, kw_only=True, config=SECTION)
class FineTuneParams:
    learning_rate: Float = Field(gt=0, lt=1)
    epochs: Int = Field(ge=0)
    schedule: Literal["cosine", "plateau"]
    warmup_epochs: Int = Field(ge=0)


@dataclass(frozen=True, kw_only=True, config=SECTION)
class SweepParams:
    unfreeze: tuple[Unfreeze, ...] = Field(min_length=1)
    augment: tuple[Bool, ...] = Field(min_length=1)


@dataclass(frozen=True, kw_only=True, config=SECTION)
class TrainParams:
    strategy: Literal["feature_extraction", "fine_tune", "sweep"]
    image_size: Int = Field(ge=32, le=1024)
    units: tuple[Annotated[Int, Field(ge=1)], ...]
    activation: Str
    dropout: Fraction01
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"]
    learning_rate: Float = Field(gt=0, lt=1)
    batch_size: Int = Field(ge=1)
    epochs: Int = Field(ge=1)
    label_smoothing: Fraction01
    class_weight: Literal["none", "balanced"] | dict[Str, Annotated[Float, Field(gt=0)]]
    patience: Int = Field(ge=1)
    reduce_lr_patience: Int = Field(ge=1)
    reduce_lr_factor: Float = Field(gt=0, lt=1)
    min_lr: Float = Field(ge=0)
    unfreeze: Unfreeze
    fine_tune: FineTuneParams
    augment: AugmentParams
    sweep: SweepParams
    features_dir: Str
    models_dir: Str
    checkpoint_dir: Str
    seed: Int
    mixed_precision: Literal["auto", "off", "mixed_float16", "mixed_bfloat16"]
    xla: Literal["auto", "on", "off"]
    distribute: Literal["auto", "off", "mirrored"]

    @model_validator(mode="after")
    def _rules(self) -> TrainParams:
        check(self.min_lr < self.learning_rate, "min_lr", "must be in [0, learning_rate)")
        return self


# --- section: audit (checks on the cached embeddings) ---------------------------------------


@dataclass(frozen=True, kw_only=True, config=SECTION)
class AuditParams:
    out_dir: Str
    near_duplicate_similarity: Float = Field(gt=0, le=1)
    hash_max_distance: Int = Field(ge=0, le=64)
    max_near_duplicate_share: Float = Field(ge=0, le=1)
    near_duplicate_severity: Literal["error", "warning"]
    label_folds: Int = Field(ge=2, le=20)
    label_top_per_class: Int = Field(ge=1)
    reference_features: Str | None
    reference_prepared: Str | None
    drift_samples: Int = Field(ge=10)
    drift_permutations: Int = Field(ge=19)
    drift_alpha: Float = Field(gt=0, lt=1)
    max_channel_shift: Float = Field(gt=0)
    pairs_shown: Int = Field(ge=1, le=256)
    seed: Int

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


@dataclass(frozen=True, kw_only=True, config=SECTION)
class EvaluateParams:
    models: tuple[Str, ...] = Field(min_length=1)
    split: Literal["test", "val"]
    out_dir: Str
    batch_size: Int = Field(ge=1)
    top_k: Int = Field(ge=2)
    confused_pairs: Int = Field(ge=1)


@dataclass(frozen=True, kw_only=True, config=SECTION)
class StudyParams:
    out_dir: Str
    tolerance: Float = Field(ge=0, le=1)


@dataclass(frozen=True, kw_only=True, config=SECTION)
class VisualizeParams:
    models: tuple[Str, ...]
    source_model: Bool
    out_dir: Str
    report: Str
    validation_summary: Str
    seed: Int
    dpi: Int = Field(ge=30)
    samples_per_class: Count
    image_index: Int = Field(ge=0)
    activation_layers: LayersOrAuto
    min_map_side: Int = Field(ge=1)
    activation_channels: Count
    change_images: Count
    first_conv_layer: Str
    filter_layers: tuple[Str, ...]
    filter_indices: tuple[Annotated[Int, Field(ge=0)], ...]
    ascent_steps: Count
    ascent_lr: Float = Field(gt=0)
    ascent_jitter: Int = Field(ge=0)
    ascent_decay: Float = Field(ge=0)
    gradcam_layer: Str
    gradcam_min_side: Int = Field(ge=1)
    gradcam_images: Count
    misclassified: Count
    pairs_shown: Count
    pair_examples: Count


# --- sections: publish, orchestration -------------------------------------------------------


@dataclass(frozen=True, kw_only=True, config=SECTION)
class PublishParams:
    destination: Str
    endpoint_url: Str | None
    profile: Str | None
    run_id: Str | None
    artifacts: tuple[Str, ...] = Field(min_length=1)
    model: Str
    metric: Literal["accuracy", "f1_macro", "recall_macro"]
    min_improvement: Fraction01
    max_class_drop: Fraction01 | None
    batch_size: Int = Field(ge=1)
    record: Str
    retries: Int = Field(ge=1)
    timeout: Float = Field(gt=0)
    multipart_threshold_mb: Int = Field(ge=5)
    multipart_chunk_mb: Int

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


@dataclass(frozen=True, kw_only=True, config=SECTION)
class ExportParams:
    models: tuple[Str, ...] = Field(min_length=1)
    formats: tuple[Literal["saved_model", "onnx", "tflite"], ...] = Field(min_length=1)
    out_dir: Str
    parity_images: Int = Field(ge=1)
    atol: Fraction01
    latency_repeats: Int = Field(ge=1)
    throughput_batch: Int = Field(ge=1)

    @model_validator(mode="after")
    def _rules(self) -> ExportParams:
        check(len(set(self.formats)) == len(self.formats), "formats", "list each format once")
        return self


@dataclass(frozen=True, kw_only=True, config=SECTION)
class OrchestrationParams:
    dag_id: Str
    owner: Str
    schedule: Str | None
    dataset_asset: Str
    workspace_dir: Str
    dvc_cache: Str | None
    keep_workspace: Bool
    failure_dir: Str
    gpu_pool: Str
    gpu_queue: Str
    gpu_pool_slots: Int = Field(ge=1)
    retries: Int = Field(ge=0)
    retry_delay_s: Float = Field(gt=0)
    max_retry_delay_s: Float = Field(gt=0)
    train_timeout_min: Float = Field(gt=0)
    stage_timeout_min: Float = Field(gt=0)
    max_active_runs: Int = Field(ge=1)
    study: Bool
    run_params: tuple[Str, ...]
    aws_conn_id: Str | None
    dvc_push: Bool
    training_executor: Literal["local", "kubernetes"]
    trainer_image: Str
    kubernetes_namespace: Str
    kubernetes_secret: Str
    kubernetes_gpus: Int = Field(ge=0)
    kubernetes_gpu_resource: Str
    kubernetes_memory: Str

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


@dataclass(frozen=True, kw_only=True, config=SECTION)
class Params:
    data: DataParams
    prepare: PrepareParams
    validate: ValidateParams
    backbone: BackboneParams
    train: TrainParams
    audit: AuditParams
    evaluate: EvaluateParams
    study: StudyParams
    visualize: VisualizeParams
    publish: PublishParams
    export: ExportParams
    orchestration: OrchestrationParams

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PARAMS = TypeAdapter(Params)


def validate(raw: dict[str, Any]) -> Params:
    """Params from plain data; a ParamsError naming the (first) bad key."""
    try:
        return PARAMS.validate_python(raw)
    except ValidationError as e:
        raise params_error(e, Params) from None


def load_params(
    path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None
) -> Params:
    """Read, type-check and range-check params.yaml (plus dotted `overrides`)."""
    try:
        return validate(with_overrides(read_raw(path), overrides))
    except ParamsError as e:
        raise UserError(f"{path}: {e}") from None


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
