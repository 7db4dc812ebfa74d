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
        check(self.source != "folder" or bool(self.path), "path",
              "the folder source needs data.path (a local folder or s3://bucket/prefix)")
        check(self.md5 is None or (len(self.md5) == 32 and _is_hex(self.md5)), "md5",
              f"{self.md5!r} is not a 32-digit hex md5")
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
        check(self.image_size is None or 8 <= self.image_size <= 1024, "image_size",
              f"{self.image_size} is out of range: must be null or 8..1024")
        check(self.max_per_class is None or self.max_per_class >= 1, "max_per_class",
              f"{self.max_per_class} is out of range: must be null or >= 1")
        check(self.fraction is None or 0 < self.fraction <= 1, "fraction",
              f"{self.fraction} is out of range: must be null or in (0, 1]")
        check(0 <= self.val_fraction < 1, "val_fraction",
              f"{self.val_fraction} is out of range: must be in [0, 1)")
        check(0 < self.test_fraction < 1, "test_fraction",
              f"{self.test_fraction} is out of range: must be in (0, 1)")
        check(self.workers >= 0, "workers", "must be >= 0")
        check(not (self.include and self.exclude), "include",
              "give include or exclude, not both")
        both = set(self.include) & set(self.exclude)
        check(not both, "exclude", f"{sorted(both)} also in include")


# --- sections filled in by later stages -----------------------------------------------------
# Each later stage owns one dataclass below; keep their shape (frozen, defaults commented,
# ranges checked in __post_init__ with `check`).


@dataclass(frozen=True)
class ValidateParams:
    pass


@dataclass(frozen=True)
class BackboneParams:
    pass


@dataclass(frozen=True)
class TrainParams:
    pass


@dataclass(frozen=True)
class EvaluateParams:
    pass


@dataclass(frozen=True)
class VisualizeParams:
    pass


@dataclass(frozen=True)
class PublishParams:
    pass


@dataclass(frozen=True)
class OrchestrationParams:
    pass


# --- the whole file -------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    validate: ValidateParams = field(default_factory=ValidateParams)
    backbone: BackboneParams = field(default_factory=BackboneParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    visualize: VisualizeParams = field(default_factory=VisualizeParams)
    publish: PublishParams = field(default_factory=PublishParams)
    orchestration: OrchestrationParams = field(default_factory=OrchestrationParams)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None
                ) -> Params:
    """Read, type-check and range-check params.yaml (plus dotted `overrides`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found (run from the project root or pass "
                        "--params PATH)")
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
        raise ParamsError(f"{where}{unknown[0]}",
                          f"unknown key; allowed keys{' in ' + key if key else ''}: "
                          f"{', '.join(names)}")
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
        raise ParamsError(key, f"{value!r} is not allowed; allowed values: "
                               f"{', '.join(map(str, allowed))}")
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
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override one param, e.g. --set prepare.image_size=64")
    args = parser.parse_args(argv)
    return load_params(args.params, parse_overrides(args.set))
