"""A params file as plain data, and pydantic's ValidationError as one line naming the key.

Knows nothing of the sections (tasks/params.py declares them): it reads YAML with YAML 1.2's
float rule (`1e-4` and `3e-05` are numbers; PyYAML's YAML 1.1 rule reads them as strings),
applies dotted `--set` overrides, and turns the first validation error of any pydantic
dataclass into one line such as

    prepare.fraction: -0.5 is out of range: must be null or in (0, 1]
"""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from tasks.common import UserError


class ParamsError(UserError):
    """A bad value in params.yaml; `key` is the dotted path to it."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}" if key else message)


def check(ok: bool, key: str, message: str) -> None:
    """Fail validation for `key` (relative to the section) unless `ok`; for cross-key rules."""
    if not ok:
        raise PydanticCustomError("params", message, {"key": key})


# --- reading: YAML 1.2 floats, dotted overrides ----------------------------------------------


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


def params_error(e: ValidationError, root: type) -> ParamsError:
    """The first error of validating `root` (an unknown key before the rest) as `key: what is
    allowed`."""
    err = sorted(e.errors(), key=lambda x: x["type"] != "unexpected_keyword_argument")[0]
    kind, loc, value, ctx = err["type"], list(err["loc"]), err["input"], err.get("ctx") or {}
    if kind == "params":  # check() / _unfreeze: the message is written out
        return ParamsError(_dotted([*loc, *([ctx["key"]] if "key" in ctx else [])]), err["msg"])
    key = _dotted(loc)
    if kind == "unexpected_keyword_argument":
        where = _dotted(loc[:-1])
        names = [f.name for f in dataclasses.fields(_field_type(root, loc[:-1]))]
        within = f" in {where}" if where else ""
        return ParamsError(key, f"unknown key; allowed keys{within}: {', '.join(names)}")
    if kind == "missing":
        return ParamsError(key, "missing: params.yaml must set every key")
    if kind in _RANGE:
        integer = not isinstance(next(iter(ctx.values())), float)
        shown = value if integer else float(value)
        rule = _rule(root, loc, ctx, integer)
        return ParamsError(key, f"{shown} is out of range: must be {rule}")
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


def _field_type(root: type, loc: list) -> Any:
    tp: Any = root
    for part in loc:
        tp = tp.__pydantic_fields__[part].annotation
    return tp


def _rule(root: type, loc: list, ctx: dict, integer: bool) -> str:
    """`in (0, 1]`, `8..1024`, `>= 1`: the field's whole range, not just the broken bound."""
    try:
        section, name = _field_type(root, loc[:-1]), loc[-1]
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


# --- descriptions: params.yaml's trailing comments ---------------------------------------------


def descriptions(path: str | Path) -> dict[str, str]:
    """{dotted key: its trailing comment} of every commented mapping key in the YAML file.

    A comment may go on over the next lines, each indented deeper than its key and starting
    with `#`; they are joined with spaces. Read round-trip by ruamel.yaml (PyYAML drops
    comments).
    """
    from ruamel.yaml import YAML  # pure Python and slower than libyaml: only for comments

    out: dict[str, str] = {}
    _comments(YAML(typ="rt").load(Path(path).read_text(encoding="utf-8")), "", out)
    return out


def _comments(node: Any, prefix: str, out: dict[str, str]) -> None:
    if not hasattr(node, "ca") or not isinstance(node, dict):
        return
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        token = (node.ca.items.get(key) or [None] * 3)[2]
        if token is not None and (text := _comment_text(token.value, node.lc.key(key)[1])):
            out[dotted] = text
        _comments(value, f"{dotted}.", out)


def _comment_text(raw: str, key_column: int) -> str:
    """`# first\\n      # more` -> `first more`; lines not indented deeper than the key end it."""
    first, *rest = raw.split("\n")
    parts = [first.lstrip().removeprefix("#").strip()]
    for line in rest:
        indent = len(line) - len(line.lstrip())
        if not line.lstrip().startswith("#") or indent <= key_column:
            break
        parts.append(line.lstrip().removeprefix("#").strip())
    return " ".join(p for p in parts if p)
