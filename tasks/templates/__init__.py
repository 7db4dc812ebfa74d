"""The project's HTML pages, from jinja2 templates in this folder (autoescaped).

base.html.j2 holds the one stylesheet; report.html.j2 (the run report, tasks.report) and
validation.html.j2 (the data verdict, tasks.validation.html) extend it. Both pages are
single files: no script, no external resource.
"""

from __future__ import annotations

import base64
import functools

from jinja2 import Environment, PackageLoader, StrictUndefined


def render(template: str, **context) -> str:
    """`template` (a file name in this folder) filled with `context`."""
    return _env().get_template(template).render(**context)


@functools.cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("tasks", "templates"),
        autoescape=True,
        undefined=StrictUndefined,  # a missing field is an error, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters |= {
        "cell": cell,
        "columns": columns,
        "b64": lambda data: base64.b64encode(data).decode(),
    }
    return env


def columns(rows: list[dict]) -> list[str]:
    """Every key of the rows, in first-seen order (rows may differ: seconds_<phase>)."""
    return list(dict.fromkeys(k for r in rows for k in r))


def cell(v) -> str:
    """A table cell: floats (and float-looking strings from CSV) to 4 decimals, None empty."""
    if v is None:
        return ""
    if isinstance(v, float) or (isinstance(v, str) and "." in v and _is_float(v)):
        return f"{float(v):.4f}"
    return str(v)


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
