"""Load the suites under expectations/ and run them with Great Expectations 1.x.

A suite file is GX's own JSON form of an ExpectationSuite plus two conventions:

    {"name": "images", "meta": {"table": "images"},          # which table it validates
     "expectations": [{"type": "expect_column_values_to_be_between",
                       "kwargs": {"column": "count", "min_value": {"$PARAMETER": "min_per_class"}},
                       "meta": {"name": "min_per_class"},  # stable id: params, summary
                       "severity": "critical" | "warning", "notes": "why it matters"}]}

`{"$PARAMETER": key}` values are GX suite parameters, filled from `validate.<key>` in
params.yaml (or a dataset fact: `classes`, `labels`) when the suite runs.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.common import UserError
from tasks.validation.outcomes import ROWS_PER_EXAMPLE, Outcome, outcome, with_range
from tasks.validation.tables import TABLES

# Columns that identify a failing row in the examples, per table (those present are used).
ROW_IDS = {
    "images": ["split", "idx", "source", "sha256"],
    "classes": ["split", "class_name"],
    "splits": ["split"],
}


@dataclass(frozen=True)
class Suite:
    path: Path
    table: str
    spec: dict  # the JSON as written


def load_suites(folder: Path) -> list[Suite]:
    """Every *.json under `folder`, checked for the conventions above."""
    paths = sorted(Path(folder).glob("*.json"))
    if not paths:
        raise UserError(
            f"{folder}: no expectation suites (*.json) found; set "
            "validate.expectations_dir to the folder holding them"
        )
    suites, seen = [], {}
    for path in paths:
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON: {e}") from None
        table = (spec.get("meta") or {}).get("table")
        if table not in TABLES:
            raise UserError(f"{path}: meta.table is {table!r}; one of {', '.join(TABLES)}")
        for i, exp in enumerate(spec.get("expectations") or []):
            name = (exp.get("meta") or {}).get("name")
            if not name:
                raise UserError(
                    f"{path}: expectation {i} ({exp.get('type')}) has no "
                    "meta.name; give each a short unique name"
                )
            if name in seen:
                raise UserError(f"{path}: expectation name {name!r} also used in {seen[name]}")
            seen[name] = path
        suites.append(Suite(path, table, spec))
    return suites


def expectation_names(suites: list[Suite]) -> list[str]:
    return [e["meta"]["name"] for s in suites for e in s.spec.get("expectations", [])]


def parameters_used(node: Any) -> set[str]:
    """Every `{"$PARAMETER": key}` key inside a suite."""
    if isinstance(node, dict):
        if "$PARAMETER" in node:
            return {node["$PARAMETER"]}
        return set().union(*(parameters_used(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(parameters_used(v) for v in node))
    return set()


def run_suites(
    suites: list[Suite],
    tables: dict,
    *,
    parameters: dict[str, Any],
    severity: dict[str, str],
    examples: int,
    docs_dir: Path,
) -> tuple[list[Outcome], list[dict]]:
    """Validate each table with its suites; render Data Docs into `docs_dir`.

    Returns the outcomes (one per expectation, in suite order) and GX's own result JSON.
    """
    for suite in suites:
        missing = parameters_used(suite.spec) - set(parameters)
        if missing:
            raise UserError(
                f"{suite.path}: unknown parameter(s) {sorted(missing)}; known: "
                f"{', '.join(sorted(parameters))}"
            )
    gx, ctx = _context(docs_dir)
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.expectations.registry import get_expectation_impl

    for suite in suites:
        for e in suite.spec["expectations"]:
            try:
                get_expectation_impl(e.get("type"))
            except Exception:  # GX would log a traceback and skip it; a gate must not
                raise UserError(
                    f"{suite.path}: {e['meta']['name']}: {e.get('type')!r} is not a Great "
                    "Expectations expectation type (see greatexpectations.io/expectations)"
                ) from None

    source = ctx.data_sources.add_pandas("prepared")
    batches = {
        t: source.add_dataframe_asset(t).add_batch_definition_whole_dataframe(t)
        for t in {s.table for s in suites}
    }
    run_id = RunIdentifier(run_name="validate")
    outcomes, raw = [], []
    for suite in suites:
        spec = _with_severity(suite.spec, severity)
        try:
            gx_suite = ctx.suites.add(gx.ExpectationSuite(**spec))
        except Exception as e:  # pydantic / GX config errors: the file is what to fix
            raise UserError(f"{suite.path}: not a valid GX suite: {e}") from None
        kept = {e.meta["name"] for e in gx_suite.expectations}
        dropped = [e for e in spec["expectations"] if e["meta"]["name"] not in kept]
        if dropped:  # GX skips one it cannot build (e.g. bad kwargs) with a log line
            raise UserError(
                f"{suite.path}: Great Expectations did not accept "
                + ", ".join(f"{e['meta']['name']} (type {e.get('type')!r})" for e in dropped)
                + "; check its kwargs against greatexpectations.io/expectations"
            )
        definition = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=gx_suite.name, data=batches[suite.table], suite=gx_suite)
        )
        table = tables[suite.table]
        ids = [c for c in ROW_IDS[suite.table] if c in table.columns]
        result = definition.run(
            batch_parameters={"dataframe": table},
            expectation_parameters=parameters,
            run_id=run_id,
            result_format={
                "result_format": "SUMMARY",
                "unexpected_index_column_names": ids,
                "partial_unexpected_count": examples * ROWS_PER_EXAMPLE,
            },
        )
        raw.append(result.to_json_dict())
        order = [e["meta"]["name"] for e in spec["expectations"]]  # GX groups by column
        outcomes += sorted(
            (with_range(outcome(r, gx_suite.name, examples), table) for r in result.results),
            key=lambda o: order.index(o.name),
        )
    ctx.build_data_docs()
    return outcomes, raw


def _context(docs_dir: Path):
    """An in-memory GX context with Data Docs in `docs_dir`: no files, no telemetry, no network."""
    os.environ["GX_ANALYTICS_ENABLED"] = "False"  # read by GX; set before it is imported
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO is internals
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),  # no temp docs site of its own
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "validation": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),  # GX needs it absolute
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx, gx.get_context(mode="ephemeral", project_config=config)


def _with_severity(spec: dict, overrides: dict[str, str]) -> dict:
    """The suite with `validate.severity` overrides applied (error -> GX critical)."""
    out = json.loads(json.dumps(spec))
    for exp in out.get("expectations", []):
        level = overrides.get(exp["meta"]["name"])
        if level:
            exp["severity"] = "critical" if level == "error" else "warning"
    return out
