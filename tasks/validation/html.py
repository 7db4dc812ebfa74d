"""reports/validation/index.html: the verdict on one self-contained page.

GX's Data Docs index draws its tables with JavaScript from public CDNs, so offline it is
blank; this page needs nothing but the file, and links to GX's page for each suite.
"""

from __future__ import annotations

from html import escape

from tasks.validation.outcomes import Outcome, example_text

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}.FAIL.error{background:#fde2e1}
.FAIL.warning{background:#fff4ce}code{font-size:12px;word-break:break-all}
h1 .passed{color:#1a7f37}h1 .failed{color:#cf222e}
"""


def render(
    *, outcomes: list[Outcome], passed: bool, dataset: str, rows: dict, pages: dict[str, str]
) -> str:
    """The page as a string; `pages` maps suite name -> its GX Data Docs page (relative)."""
    verdict = "passed" if passed else "failed"
    head = (
        f"<h1>Validation <span class={verdict}>{verdict.upper()}</span></h1>"
        f"<p>{escape(dataset)}: {rows.get('images', 0)} images, {len(outcomes)} expectations. "
        "GX Data Docs per suite: "
        + ", ".join(f'<a href="{escape(p)}">{escape(s)}</a>' for s, p in sorted(pages.items()))
        + "</p>"
    )
    cells = [
        "expectation",
        "suite",
        "column",
        "observed",
        "expected",
        "result",
        "severity",
        "examples",
    ]
    body = "".join(_row(o) for o in outcomes)
    return (
        f"<!doctype html><meta charset=utf-8><title>Validation {verdict}</title>"
        f"<style>{STYLE}</style>{head}<table><tr>"
        + "".join(f"<th>{c}</th>" for c in cells)
        + f"</tr>{body}</table>"
    )


def _row(o: Outcome) -> str:
    result = "pass" if o.success else "FAIL"
    examples = "<br>".join("<code>" + escape(example_text(x)) + "</code>" for x in o.examples)
    values = [o.name, o.suite, o.column, o.observed, o.expected, result, o.severity]
    return (
        f'<tr class="{result} {o.severity}">'
        + "".join(f"<td>{escape(str(v))}</td>" for v in values)
        + f"<td>{examples}</td></tr>"
    )
