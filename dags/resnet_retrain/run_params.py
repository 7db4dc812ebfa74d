"""DAG Params built from tasks/params.py, so the trigger form validates what params.yaml would.

Each key in `orchestration.run_params` becomes one form field named by its params.yaml key
(`train.epochs`), typed by the dataclass field (enum for Literal, nullable for `X | None`,
array for tuples) and defaulting to params.yaml's value. Any other key goes in the
`overrides` list as KEY=VALUE. Ranges (epochs >= 1, ...) are checked when the run starts,
by the same `__post_init__` checks `dvc repro` applies, with the same one-line message.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

OVERRIDES = "overrides"
OVERRIDE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+=.*$"


def field_type(cls: type, dotted: str) -> Any:
    """The type hint of `section.key[.sub]` in the Params dataclass tree."""
    tp: Any = cls
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(tp):
            raise KeyError(dotted)
        hints = get_type_hints(tp)
        if part not in hints:
            raise KeyError(dotted)
        tp = hints[part]
    return tp


def schema(tp: Any) -> dict[str, Any]:
    """JSON schema of a params.py type hint (what Airflow's Param validates)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [schema(a) for a in get_args(tp)]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if tp is type(None):
        return {"type": "null"}
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin in (tuple, list):
        inner = get_args(tp)[0] if get_args(tp) else Any
        return {"type": "array", "items": schema(inner)}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    return {}


def value_of(params: Any, dotted: str) -> Any:
    node = params
    for part in dotted.split("."):
        node = getattr(node, part)
    return list(node) if isinstance(node, tuple) else node


def param_specs(params: Any, keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """{key: {"default", "schema", "description"}} for the trigger form."""
    specs = {}
    for key in keys:
        try:
            tp = field_type(type(params), key)
        except KeyError:
            raise ValueError(
                f"orchestration.run_params: {key!r} is not a params.yaml key"
            ) from None
        specs[key] = {
            "default": value_of(params, key),
            "schema": schema(tp),
            "description": f"params.yaml `{key}` for this run",
        }
    return specs


def overrides_from(conf: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Dotted overrides for this run: form fields that differ from params.yaml + `overrides`."""
    import yaml

    out = {k: v for k, v in conf.items() if k in defaults and k != OVERRIDES and v != defaults[k]}
    for item in conf.get(OVERRIDES) or []:
        key, _, value = str(item).partition("=")
        out[key.strip()] = yaml.safe_load(value)
    return out
