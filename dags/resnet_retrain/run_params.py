"""DAG Params from the params model, so the trigger form validates what params.yaml would.

Each key in `orchestration.run_params` becomes one form field named by its params.yaml key
(`train.epochs`), with the JSON schema pydantic gives that field in tasks/params.py
(integers, typed arrays, enums, ranges, null where allowed), the key's trailing comment in
params.yaml as description and params.yaml's value as default. Any other key goes in the
`overrides` list as KEY=VALUE (parsed like `--set`, YAML 1.2 floats). The run checks
everything again before any work.
"""

from __future__ import annotations

from typing import Any

from tasks.paramfile import parse_overrides
from tasks.params import PARAMS

OVERRIDES = "overrides"
OVERRIDE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+=.*$"


def field_schema(root: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The JSON schema of `section.key[.sub]` in the model's schema `root`, `$ref`s inlined."""
    node = root
    for part in dotted.split("."):
        props = _inline(root, node).get("properties", {})
        if part not in props:
            raise KeyError(dotted)
        node = props[part]
    return _inline(root, node)


def _inline(root: dict[str, Any], node: Any) -> Any:
    """`node` with every `$ref` replaced by its definition and pydantic's titles dropped."""
    if isinstance(node, list):
        return [_inline(root, n) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _inline(root, {**root["$defs"][name], **rest})
    return {k: _inline(root, v) for k, v in node.items() if k not in ("title", "$defs")}


def value_of(params: Any, dotted: str) -> Any:
    node = params
    for part in dotted.split("."):
        node = getattr(node, part)
    return list(node) if isinstance(node, tuple) else node


def param_specs(
    params: Any, keys: tuple[str, ...], descriptions: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """{key: {"default", "schema", "description"}} for the trigger form; `descriptions` are
    params.yaml's comments by dotted key (tasks.paramfile.descriptions)."""
    root = PARAMS.json_schema()
    specs = {}
    for key in keys:
        try:
            schema = field_schema(root, key)
        except KeyError:
            raise ValueError(
                f"orchestration.run_params: {key!r} is not a params.yaml key"
            ) from None
        specs[key] = {
            "default": value_of(params, key),
            "schema": schema,
            "description": descriptions.get(key, ""),
        }
    return specs


def overrides_from(conf: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Dotted overrides for this run: form fields that differ from params.yaml + `overrides`."""
    out = {k: v for k, v in conf.items() if k in defaults and k != OVERRIDES and v != defaults[k]}
    out.update(parse_overrides([str(item) for item in conf.get(OVERRIDES) or []]))
    return out
