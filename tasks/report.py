"""The run's HTML report: one self-contained file (figures embedded as base64 PNGs).

    python -m tasks.report [--params params.yaml]     # rebuild it from existing outputs

It leads with the answer (tasks/headline.py: which strategy won and by how much, the
held-out classes' recall under each, the study's recommendation, and the champion line that
publish fills into the copy it uploads), then the run id, dataset and its version, metrics,
per-class tables, confused pairs, every figure of figures/figures.json, the validation
checks, params, and relative links to the raw files (they resolve as long as the run folder
keeps its layout). `collect` reads the disk, `build_html` is pure (templates/report.html.j2),
`write_report` writes atomically.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks import headline, templates
from tasks.common import atomic_write_text, run_main
from tasks.evaluate import KEY_METRICS, holdout_columns
from tasks.layout import (
    COMPARISON,
    DETAILS,
    FIGURES,
    HISTORY,
    METRICS,
    STUDY,
    STUDY_PNG,
    TRAIN_INFO,
)
from tasks.lineage import dataset_version, git_commit, new_run_id, recorded_run_id
from tasks.params import Params, params_from_cli

FIGURE_SECTIONS = {  # report sections of figures that belong to no single model
    "data": "Data",
    "activations": "Intermediate activations",
    "filters": "Convolution filters",
}
MODEL_SIDE_FILES = (TRAIN_INFO, HISTORY)  # linked; a published run folder holds them too


@dataclass(frozen=True)
class StageOutputs:
    """Where the report reads one run's stage outputs."""

    prepared_dir: Path
    models_dir: Path
    metrics_dir: Path  # evaluate.out_dir
    figures_dir: Path  # visualize.out_dir
    validation_summary: Path
    split: str  # the split the metrics were measured on
    study_dir: Path | None = None  # study.out_dir: shown when the study stage wrote it
    metric: str = "accuracy"  # publish.metric: the answer compares the strategies on it


def stage_outputs(params: Params) -> StageOutputs:
    """For main()s (this one and visualize's): the folders params.yaml names."""
    return StageOutputs(
        prepared_dir=Path(params.data.prepared_dir),
        models_dir=Path(params.train.models_dir),
        metrics_dir=Path(params.evaluate.out_dir),
        figures_dir=Path(params.visualize.out_dir),
        validation_summary=Path(params.visualize.validation_summary),
        split=params.evaluate.split,
        study_dir=Path(params.study.out_dir),
        metric=params.publish.metric,
    )


def write_report(path: Path, *, run_id: str, outs: StageOutputs, params: dict) -> Path:
    """Collect, render and atomically write the report to `path`; `params` is shown as is."""
    atomic_write_text(path, build_html(collect(outs, run_id=run_id, params=params, report=path)))
    return path


def collect(outs: StageOutputs, *, run_id: str, params: dict, report: Path) -> dict:
    """Everything the report shows, read from the stage outputs (missing parts are None)."""
    metrics = _json(outs.metrics_dir / METRICS) or {}
    figures = _json(outs.figures_dir / FIGURES) or []
    for f in figures:
        png = outs.figures_dir / f["file"]
        f["png"] = png.read_bytes() if png.is_file() else b""
    study = _study(outs.study_dir)
    return {
        "run_id": run_id,
        "answer": headline.answer(metrics, metric=outs.metric, study=study),
        "commit": git_commit(None),
        "created": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC",
        "dataset": _dataset(outs.prepared_dir, outs.split),
        "params": params,
        "metrics": metrics,
        "models": {
            name: {
                "per_class": _csv(outs.metrics_dir / DETAILS / name / "per_class.csv"),
                "pairs": _json(outs.metrics_dir / DETAILS / name / "pairs.json"),
            }
            for name in metrics
        },
        "comparison": _csv(outs.metrics_dir / COMPARISON),
        "validation": _json(outs.validation_summary),
        "figures": figures,
        "study": study,
        "links": _links(raw_files(outs, models=list(metrics), figures=figures), report),
    }


def raw_files(outs: StageOutputs, *, models: list[str], figures: list[dict]) -> list[Path]:
    """The files the report links to: only what a published run folder holds too
    (publish.artifacts), so the links keep working there."""
    sides = [
        f
        for name in models
        for f in sorted(outs.models_dir.glob(f"**/{name}/*"))
        if f.name in MODEL_SIDE_FILES
    ]
    return [
        outs.metrics_dir / METRICS,
        outs.metrics_dir / COMPARISON,
        outs.validation_summary,
        *sides,
        *sorted(outs.metrics_dir.glob(f"{DETAILS}/*/per_class.csv")),
        *sorted(outs.metrics_dir.glob("confusion/*.csv")),
        *sorted(outs.metrics_dir.glob("curves/*.csv")),
        *[outs.figures_dir / f["file"] for f in figures],
    ]


def build_html(ctx: dict) -> str:
    """The report page; pure (every image inline, no external resource)."""
    v = ctx["validation"]
    return templates.render(
        "report.html.j2",
        run_id=ctx["run_id"],
        answer=ctx["answer"],
        decision=headline.decision_html(None),  # pending: publish fills in its copy
        facts=_facts(ctx),
        nav=[
            ("answer", "answer"),
            ("metrics", "metrics"),
            *([("study", "unfreezing study")] if ctx.get("study") else []),
            *[(_anchor(name), name) for name in ctx["models"]],
            *FIGURE_SECTIONS.items(),
            *[(s, s) for s in ("validation", "params", "files")],
        ],
        metrics=_metric_rows(ctx["metrics"], (*KEY_METRICS, "others_accuracy", "n_images")),
        all_metrics=_metric_rows(ctx["metrics"]),
        comparison=ctx["comparison"],
        models=[
            {
                "name": name,
                "id": _anchor(name),
                "per_class": m["per_class"],
                "pairs": _named_pairs(m["pairs"]),
            }
            for name, m in ctx["models"].items()
        ],
        study=ctx.get("study"),
        figure_sections=FIGURE_SECTIONS,
        figures=ctx["figures"],
        validation=None if v is None else json.dumps(v, indent=2, default=str),
        checks=_checks(v),
        passed=v.get("passed") if isinstance(v, dict) else None,
        params=yaml.safe_dump(_plain(ctx["params"]), sort_keys=False),
        links=ctx["links"],
    )


def _facts(ctx: dict) -> dict[str, str]:
    """The table under the title: when, which code, which data."""
    d = ctx["dataset"]
    return {
        "created": ctx["created"],
        "git commit": ctx["commit"] or "?",
        "dataset": f"{d['name']} ({d['source']}), {len(d['classes'])} classes, "
        f"{d['image_size']} px",
        "images per split": ", ".join(f"{k} {n}" for k, n in d["n"].items()),
        "dataset version": d["version"],
        "metrics measured on": f"{d['split']} split",
    }


# --- helpers ---------------------------------------------------------------------------------


def _metric_rows(metrics: dict[str, dict], keys: tuple[str, ...] | None = None) -> list[dict]:
    """One row per model, the held-out dict flattened; only `keys` (those present) if given."""
    rows = [
        {"model": name} | {k: v for k, v in m.items() if k != "holdout"} | holdout_columns(m)
        for name, m in metrics.items()
    ]
    if keys is None:
        return rows
    shown = [k for k in keys if any(k in r for r in rows)]
    return [{"model": r["model"]} | {k: r.get(k) for k in shown} for r in rows]


def _checks(summary) -> list[dict]:
    """validate's checks as table rows, failures first (summary.json's `checks`)."""
    checks = summary.get("checks", []) if isinstance(summary, dict) else []
    rows = [
        {
            "check": c.get("name"),
            "result": "pass" if c.get("success") else "FAIL",
            "severity": c.get("severity"),
            "observed": c.get("observed"),
            "expected": c.get("expected"),
            "suite": c.get("suite"),
        }
        for c in checks
    ]
    return sorted(rows, key=lambda r: r["result"] == "pass")


def _dataset(prepared_dir: Path, split: str) -> dict:
    info = _json(prepared_dir / "dataset.json") or {}
    return {
        "name": info.get("name", "?"),
        "source": info.get("source", "?"),
        "classes": info.get("classes", []),
        "image_size": info.get("image_size"),
        "n": info.get("n", {}),
        "split": split,
        "version": dataset_version(prepared_dir) if info else "?",
    }


def _links(files: list[Path], report: Path) -> list[tuple[str, str]]:
    """(label, href relative to the report) of each file that exists."""
    base = report.parent.resolve()
    return [
        (p.as_posix(), Path(os.path.relpath(p.resolve(), base)).as_posix())
        for p in files
        if p.is_file()
    ]


def _named_pairs(pairs: list[dict] | None) -> list[dict]:
    """Confused pairs without ia/ib (class indices for visualize; the names say the same)."""
    return [{k: x for k, x in p.items() if k not in ("ia", "ib")} for p in pairs or []]


def _anchor(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in s)


def _plain(x):
    """Tuples -> lists, so yaml.safe_dump takes the params."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def _study(folder: Path | None) -> dict | None:
    """study.json and study.png's bytes (tasks.study), or None when no study ran."""
    summary = _json(folder / STUDY) if folder else None
    if not summary:
        return None
    png = folder / STUDY_PNG
    return summary | {"png": png.read_bytes() if png.is_file() else b""}


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    params = params_from_cli(__doc__)
    outs = stage_outputs(params)
    # re-rendered by hand: the id visualize gave this report (run.json), as publish does
    run_id = (
        params.publish.run_id or recorded_run_id(outs.figures_dir) or new_run_id(git_commit(None))
    )
    path = write_report(
        Path(params.visualize.report), run_id=run_id, outs=outs, params=params.to_dict()
    )
    print(f"report    {path.resolve()}")


if __name__ == "__main__":
    run_main(main)
