"""reports/validation/index.html: the verdict on one self-contained page.

GX's Data Docs index draws its tables with JavaScript from public CDNs, so offline it is
blank; this page needs nothing but the file, and links to GX's page for each suite.
"""

from __future__ import annotations

from tasks import templates
from tasks.validation.outcomes import Outcome, example_text

COLUMNS = ["expectation", "suite", "column", "observed", "expected", "result", "severity"]


def render(
    *, outcomes: list[Outcome], passed: bool, dataset: str, rows: dict, pages: dict[str, str]
) -> str:
    """The page as a string; `pages` maps suite name -> its GX Data Docs page (relative)."""
    return templates.render(
        "validation.html.j2",
        verdict="passed" if passed else "failed",
        dataset=dataset,
        images=rows.get("images", 0),
        pages=sorted(pages.items()),
        columns=[*COLUMNS, "examples"],
        checks=[_row(o) for o in outcomes],
    )


def _row(o: Outcome) -> dict:
    result = "pass" if o.success else "FAIL"
    return {
        "result": result,
        "severity": o.severity,
        "cells": [o.name, o.suite, o.column, o.observed, o.expected, result, o.severity],
        "examples": [example_text(x) for x in o.examples],
    }
