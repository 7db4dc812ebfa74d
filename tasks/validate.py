"""Stage `validate`: data/prepared/ -> reports/validation/ (the Great Expectations gate).

    python -m tasks.validate [--params params.yaml] [--set validate.min_per_class=50 ...]

Builds three tables from the prepared dataset (per image, per split x class, per split; see
tasks/validation/tables.py), runs every suite in expectations/ on them and writes

    reports/validation/summary.json   {"passed": bool, "failed": [...], "warnings": [...], ...}
    reports/validation/index.html     the verdict on one self-contained page (works offline)
    reports/validation/results.json   GX's validation results, one per suite
    reports/validation/docs/          GX Data Docs (a page per suite, linked from index.html)

then prints one line per expectation. A failing `error` expectation exits 2 naming it, with
examples (e.g. the first leaking hashes and their files); a `warning` is only reported.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tasks.common import UserError, atomic_dir, atomic_write_json, atomic_write_text, run_main
from tasks.dataset import open_prepared
from tasks.params import ValidateParams, params_from_cli
from tasks.validation.html import render
from tasks.validation.outcomes import Outcome, example_text
from tasks.validation.suites import expectation_names, load_suites, run_suites
from tasks.validation.tables import build_tables, read_classes

log = logging.getLogger(__name__)

SUMMARY, RESULTS, PAGE, DOCS = "summary.json", "results.json", "index.html", "docs"
# validate.* keys a suite may name as {"$PARAMETER": key}; plus the dataset's own facts
THRESHOLDS = ("min_per_class", "min_class_ratio", "max_quarantine_share", "min_pixel_range")


@dataclass
class Report:
    dataset: str
    outcomes: list[Outcome]
    results: list[dict]  # GX's own JSON, one per suite
    rows: dict[str, int]  # rows per table
    parameters: dict
    seconds: dict[str, float]  # tables (numpy), suites (GX import, runs, Data Docs)
    pages: dict[str, str] = field(default_factory=dict)  # suite -> its Data Docs page

    @property
    def passed(self) -> bool:
        """No `error` expectation failed (warnings do not count)."""
        return not self.failed

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "error"]

    @property
    def warnings(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "warning"]

    def summary(self) -> dict:
        """summary.json: the verdict first (training stages read `passed`), then details."""
        return {
            "passed": self.passed,
            "failed": [o.name for o in self.failed],
            "warnings": [o.name for o in self.warnings],
            "dataset": self.dataset,
            "rows": self.rows,
            "expectations": len(self.outcomes),
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "parameters": self.parameters,
            "checks": [asdict(o) for o in self.outcomes],
        }


def validate(*, prepared_dir: Path, cfg: ValidateParams, docs_dir: Path) -> Report:
    """Run every suite of `cfg.expectations_dir` on the prepared dataset; docs go to docs_dir."""
    start = time.perf_counter()
    suites = load_suites(Path(cfg.expectations_dir))
    names = expectation_names(suites)
    unknown = sorted(set(cfg.severity) - set(names))
    if unknown:
        raise UserError(
            f"validate.severity names {unknown}, which no suite in "
            f"{cfg.expectations_dir}/ defines; names: {', '.join(names)}"
        )
    prepared = open_prepared(prepared_dir)
    classes = read_classes(prepared)
    tables = build_tables(prepared, splits=cfg.splits)
    built = time.perf_counter()
    log.info("tables built in %.1f s (%d images)", built - start, len(tables["images"]))
    parameters = {k: getattr(cfg, k) for k in THRESHOLDS} | {
        "classes": classes,
        "labels": list(range(len(classes))),
    }
    outcomes, results = run_suites(
        suites,
        tables,
        parameters=parameters,
        severity=cfg.severity,
        examples=cfg.examples,
        docs_dir=docs_dir,
    )
    return Report(
        dataset=str(prepared_dir),
        outcomes=outcomes,
        results=results,
        rows={k: len(v) for k, v in tables.items()},
        parameters=parameters,
        seconds={"tables": built - start, "suites": time.perf_counter() - built},
        pages={s.spec["name"]: _page(docs_dir, s.spec["name"]) for s in suites},
    )


def write_report(report: Report, folder: Path) -> None:
    atomic_write_json(folder / SUMMARY, report.summary())
    atomic_write_json(folder / RESULTS, report.results)
    atomic_write_text(
        folder / PAGE,
        render(
            outcomes=report.outcomes,
            passed=report.passed,
            dataset=report.dataset,
            rows=report.rows,
            pages=report.pages,
        ),
    )


def _page(docs_dir: Path, suite: str) -> str:
    """Path of GX's page for `suite`, relative to the report folder ('' if GX wrote none)."""
    found = sorted(Path(docs_dir).glob(f"validations/{suite}/**/*.html"))
    return found[-1].relative_to(Path(docs_dir).parent).as_posix() if found else ""


def format_table(report: Report) -> str:
    """One line per expectation: name, observed, expected, pass/FAIL, severity."""
    head = ("expectation", "observed", "expected", "result", "severity")
    rows = [
        (o.name, o.observed, o.expected, "pass" if o.success else "FAIL", o.severity)
        for o in report.outcomes
    ]
    widths = [min(42, max(len(r[i]) for r in [head, *rows])) for i in range(len(head))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*head), line.format(*("-" * w for w in widths))]
    out += [
        line.format(
            *(c if len(c) <= w else c[: w - 1] + "~" for c, w in zip(r, widths, strict=True))
        )
        for r in rows
    ]
    verdict = "PASSED" if report.passed else "FAILED"
    out.append(
        f"\nvalidation {verdict}: {len(report.outcomes)} expectations, "
        f"{len(report.failed)} blocking failure(s), {len(report.warnings)} warning(s), "
        f"{report.rows['images']} images, {sum(report.seconds.values()):.1f} s"
    )
    if report.warnings:
        out += ["warnings (reported, not blocking):", *_details(report.warnings)]
    return "\n".join(out)


def failure_message(report: Report, page: Path) -> str:
    """The error a failed gate ends with: each blocking expectation and its first examples."""
    lines = [
        f"validation failed: {len(report.failed)} blocking expectation(s) on {report.dataset}:"
    ]
    lines += _details(report.failed)
    lines.append(
        f"details: {page}; to let one through, fix the data or set "
        "validate.severity.<name>: warning (params.yaml, or --set validate.severity.<name>=warning)"
    )
    return "\n".join(lines)


def _details(outcomes: list[Outcome]) -> list[str]:
    """Each expectation with what it saw and its first failing rows."""
    lines = []
    for o in outcomes:
        lines.append(f"  {o.name} ({o.column}): {o.observed}; expected {o.expected}")
        lines += [f"      e.g. {example_text(x)}" for x in o.examples]
    return lines


def verdict(out_dir: Path) -> str:
    """One line for `make run`'s closing summary, from a previous run's summary.json."""
    path = Path(out_dir) / SUMMARY
    if not path.is_file():
        return f"validation not run ({path} missing): python -m tasks.validate"
    summary = json.loads(path.read_text())
    failed = ", ".join(summary["failed"]) or "none"
    warned = ", ".join(summary["warnings"]) or "none"
    return (
        f"validation {'PASSED' if summary['passed'] else 'FAILED'}: "
        f"{summary['expectations']} expectations; failed: {failed}; warnings: {warned}; "
        f"details in {Path(out_dir) / PAGE}"
    )


def main() -> None:
    params = params_from_cli(__doc__)
    cfg = params.validate
    out = Path(cfg.out_dir)
    with atomic_dir(out) as tmp:  # written on failure too: the report says what to fix
        report = validate(prepared_dir=Path(params.data.prepared_dir), cfg=cfg, docs_dir=tmp / DOCS)
        write_report(report, tmp)
    print(format_table(report))
    if not report.passed:
        raise UserError(failure_message(report, out / PAGE))


if __name__ == "__main__":
    run_main(main)
