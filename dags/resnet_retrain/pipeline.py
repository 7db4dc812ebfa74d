"""dvc.yaml read as a graph of stage groups, so the DAG follows the pipeline as it grows.

A *group* is one entry under `stages:`; a `matrix:` or `foreach:` entry is one group whose
items (`sweep@1-false`, ...) DVC generates and the DAG maps over at run time. Group B runs
after group A when one of B's deps is one of A's outputs or lies inside (or around) it, the
same rule DVC uses to build its own graph. `${section.key}` is resolved from params.yaml;
`${item...}`-style parts of matrix paths match anything below the fixed prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import yaml

_VAR = re.compile(r"\$\{\s*([^}]+?)\s*\}")
OUT_KEYS = ("outs", "metrics", "plots")


@dataclass(frozen=True)
class Group:
    name: str
    cmd: str
    deps: tuple[str, ...]  # resolved path prefixes
    outs: tuple[str, ...]
    mapped: bool  # matrix/foreach: items are expanded at run time
    desc: str = ""


def load_yaml(path: Path) -> dict:
    """A YAML mapping, parsed by libyaml when present (5-10x faster: DAG parse time counts)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}  # noqa: S506


def read_groups(dvc_yaml: Path, params: dict) -> dict[str, Group]:
    """Stage groups of dvc.yaml, in file order; `${...}` resolved from `params` (raw)."""
    stages = load_yaml(dvc_yaml).get("stages") or {}
    groups = {}
    for name, spec in stages.items():
        mapped = "matrix" in spec or "foreach" in spec
        body = spec.get("do", spec) if "foreach" in spec else spec
        cmd = body.get("cmd", "")
        groups[name] = Group(
            name=name,
            cmd=" && ".join(cmd) if isinstance(cmd, list) else str(cmd),
            deps=tuple(_paths(body.get("deps"), params)),
            outs=tuple(p for k in OUT_KEYS for p in _paths(body.get(k), params)),
            mapped=mapped,
            desc=str(body.get("desc", "")),
        )
    return groups


def upstream(
    groups: dict[str, Group], reads: dict[str, tuple[str, ...]] | None = None
) -> dict[str, list[str]]:
    """{group: the groups it directly waits for} (transitive edges dropped, for a clean graph).

    `reads` adds what a stage reads without declaring it as a DVC dep, as path globs: the
    evaluate stage scores `models/sweep/*` when present (a dep would make `dvc repro
    publish` run the whole sweep), so in the DAG it must wait for the sweep.
    """
    reads = reads or {}

    def waits(b: Group, a: Group) -> bool:
        paths = [*b.deps, *(_fixed_prefix(p) for p in reads.get(b.name, ()))]
        return a.name != b.name and any(_overlap(d, o) for d in paths for o in a.outs)

    direct = {b.name: [a.name for a in groups.values() if waits(b, a)] for b in groups.values()}
    reduced = {}
    for name, ups in direct.items():
        reach = {r for u in ups for r in _ancestors(u, direct)}
        reduced[name] = [u for u in ups if u not in reach]
    return reduced


def is_training(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch(name, p) for p in patterns)


def _ancestors(name: str, direct: dict[str, list[str]], seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    for u in direct.get(name, []):
        if u not in seen:
            seen.add(u)
            _ancestors(u, direct, seen)
    return seen


def _paths(entries: Any, params: dict) -> list[str]:
    out = []
    for e in entries or []:
        path = next(iter(e)) if isinstance(e, dict) else str(e)
        out.append(_resolve(path, params))
    return out


def _resolve(path: str, params: dict) -> str:
    """`${data.raw_dir}/x` -> `data/raw/x`; stops at the first part only known per item."""
    parts = []
    pos = 0
    for m in _VAR.finditer(path):
        value = _lookup(params, m.group(1))
        parts.append(path[pos : m.start()])
        if value is None:  # `${item.unfreeze}`: everything below the prefix may match
            return _norm("".join(parts).rsplit("/", 1)[0] if "/" in "".join(parts) else "")
        parts.append(str(value))
        pos = m.end()
    parts.append(path[pos:])
    return _norm("".join(parts))


def _lookup(params: dict, dotted: str) -> Any:
    node: Any = params
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, str | int | float) else None


def _norm(path: str) -> str:
    path = path.strip().removeprefix("./").rstrip("/")
    return path


def _fixed_prefix(pattern: str) -> str:
    """`models/sweep/*` -> `models/sweep`: the folder part before the first glob character."""
    cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=None)
    if cut is None:
        return _norm(pattern)
    return _norm(pattern[:cut].rsplit("/", 1)[0] if "/" in pattern[:cut] else "")


def _overlap(a: str, b: str) -> bool:
    if not a or not b:
        return False
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")
