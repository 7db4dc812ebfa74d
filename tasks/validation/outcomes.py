"""GX validation results in the words of the summary table: observed, expected, examples.

leakage_across_splits  4 of 1797 rows fail (min 1, max 2)  == 1  FAIL  error
  e.g. sha256=904de1fa..., copies=test #5: images.npy#35 | train #0: images.npy#0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LEVELS = {"critical": "error", "warning": "warning", "info": "warning"}  # GX -> ours
HASH_COLUMNS = ("hash_splits", "split,sha256")  # checks whose examples group by image hash
ROWS_PER_EXAMPLE = 4  # failing rows asked of GX per example: a hash's copies share one


@dataclass
class Outcome:
    """One expectation's verdict, in the words of the summary table."""

    name: str
    suite: str
    type: str
    column: str
    severity: str  # error | warning
    success: bool
    observed: str
    expected: str
    unexpected: int | None = None  # failing rows, for row-wise expectations
    examples: list[dict] = field(default_factory=list)
    error: str | None = None  # GX could not evaluate it (e.g. a column is missing)


def outcome(r, suite: str, examples: int) -> Outcome:
    """One GX ExpectationValidationResult in the summary table's words."""
    cfg = r.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
    res = r.result or {}
    error = _exception(r.exception_info)
    column = (
        kwargs.get("column")
        or ",".join(kwargs.get("column_list", []))
        or ",".join(filter(None, [kwargs.get("column_A"), kwargs.get("column_B")]))
        or "(table)"
    )
    return Outcome(
        name=cfg.meta["name"],
        suite=suite,
        type=cfg.type,
        column=column,
        severity=LEVELS[str(getattr(cfg.severity, "value", cfg.severity))],
        success=bool(r.success),
        observed=_observed(res, error),
        expected=_expected(cfg.type, kwargs),
        unexpected=res.get("unexpected_count"),
        error=error,
        examples=_examples(res.get("partial_unexpected_index_list") or [], column, examples),
    )


def _examples(rows: list[dict], column: str, n: int) -> list[dict]:
    """The first `n` failing rows; for a hash check, the first `n` hashes with every copy.

    Rows arrive sorted by sha256 (tables.py), so the copies of one image are adjacent.
    """
    rows = [_plain(r) for r in rows]
    if column not in HASH_COLUMNS or not all("sha256" in r for r in rows):
        return rows[:n]
    copies: dict[str, list[str]] = {}
    for r in rows:
        where = f"{r.get('split')} #{r.get('idx')}: {r.get('source')}"
        copies.setdefault(r["sha256"], []).append(where)
    return [{"sha256": h, "copies": c} for h, c in list(copies.items())[:n]]


def with_range(o: Outcome, table) -> Outcome:
    """Add the column's observed min and max to a range check (GX reports only failures)."""
    if o.type == "expect_column_values_to_be_between" and not o.error and o.column in table:
        values = table[o.column].dropna()
        if len(values):
            o.observed += f" (min {_short(values.min())}, max {_short(values.max())})"
    return o


def _exception(info: Any) -> str | None:
    """GX's exception message, whether given flat or per metric (a missing column)."""
    if not isinstance(info, dict):
        return None
    for item in [info, *info.values()]:
        if isinstance(item, dict) and item.get("raised_exception"):
            return str(item.get("exception_message") or "an exception in GX")
    return None


def _observed(res: dict, error: str | None) -> str:
    if error:
        return f"could not run: {error.splitlines()[0][:80]}"
    if "unexpected_count" in res:
        n, total = res["unexpected_count"], res.get("element_count", 0)
        return f"{n} of {total} rows fail" if n else f"all {total} rows pass"
    missing = ((res.get("details") or {}).get("mismatched") or {}).get("missing")
    if "details" in res and isinstance(res.get("observed_value"), list):  # a column set
        return f"missing {_short(missing, braces=True)}" if missing else "all present"
    return _short(res.get("observed_value"))


def _expected(kind: str, kwargs: dict) -> str:
    """A short reading of an expectation's kwargs: `>= 10`, `in {3}`, `== index_label`."""
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is not None or hi is not None:
        if lo is not None and hi is not None:
            return f"== {_short(lo)}" if lo == hi else f"{_short(lo)}..{_short(hi)}"
        return f">= {_short(lo)}" if lo is not None else f"<= {_short(hi)}"
    if "value_set" in kwargs:
        return f"in {_short(kwargs['value_set'], braces=True)}"
    if "column_set" in kwargs:
        return f"has {_short(kwargs['column_set'], braces=True)}"
    if "type_list" in kwargs:
        return f"type in {_short(kwargs['type_list'], braces=True)}"
    if "column_A" in kwargs:
        return f"{kwargs['column_A']} == {kwargs['column_B']}"
    if "regex" in kwargs:
        return f"matches {kwargs['regex']}"
    if "column_list" in kwargs:
        return "unique together"
    if kind.endswith("to_not_be_null"):
        return "no nulls"
    if kind.endswith("to_be_unique"):
        return "unique"
    return _short(kwargs)


def _short(value: Any, braces: bool = False) -> str:
    if isinstance(value, list | tuple | set):
        items = list(value)
        text = ", ".join(map(str, items[:4])) + (f", ... ({len(items)})" if len(items) > 4 else "")
        return "{" + text + "}" if braces else f"[{text}]"
    if isinstance(value, float):
        return f"{value:.3g}"
    if hasattr(value, "item"):  # numpy scalar
        return _short(value.item())
    return str(value)


def _plain(row: dict) -> dict:
    """JSON-safe example row: numpy scalars -> Python, NaN (a missing value) -> None."""
    out = {}
    for k, v in row.items():
        v = v.item() if hasattr(v, "item") else v
        out[k] = None if isinstance(v, float) and v != v else v
    return out


def example_text(row: dict) -> str:
    """`k=v, ...` for an example row; a hash's copies joined by ` | `."""

    def text(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return " | ".join(map(str, v)) if isinstance(v, list) else str(v)

    return ", ".join(f"{k}={text(v)}" for k, v in row.items())
