"""The run's HTML report: one self-contained file (figures embedded as base64 PNGs).

    python -m tasks.report [--params params.yaml]     # rebuild it from existing outputs

Run id, dataset and its version, params, metrics, per-class tables, confused pairs, every
figure of figures/figures.json, the validation summary, and relative links to the raw
files (they resolve as long as the run folder keeps its layout). `collect` reads the disk,
`build_html` is pure, `write_report` writes atomically.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import json
import os
from pathlib import Path

import yaml

from tasks.common import atomic_write_text, run_main
from tasks.layout import COMPARISON, DETAILS, FIGURES, METRICS
from tasks.lineage import dataset_version, git_commit, new_run_id, recorded_run_id
from tasks.params import Params, params_from_cli

SECTIONS = {
    "data": "Data",
    "comparison": "Strategies and sweep",
    "activations": "Intermediate activations",
    "filters": "Convolution filters",
}


def run_id(given: str | None) -> str:
    """The given id (publish.run_id), else UTC time + short git commit, as publish names runs.

    The chosen id is also written to <visualize.out_dir>/run.json, where `tasks.publish`
    finds it, so the report and the published run folder carry the same id.
    """
    return given or new_run_id(git_commit(None))


def collect(params: Params, *, report_path: Path, run: str | None = None) -> dict:
    """Everything the report shows, read from the stage outputs (missing parts are None)."""
    ev, vz = params.evaluate, params.visualize
    metrics_dir, fig_dir = Path(ev.out_dir), Path(vz.out_dir)
    prepared_dir = Path(params.data.prepared_dir)
    metrics = _json(metrics_dir / METRICS) or {}
    models = {}
    for name in metrics:
        d = metrics_dir / DETAILS / name
        models[name] = {"per_class": _csv(d / "per_class.csv"), "pairs": _json(d / "pairs.json")}
    figures = _json(fig_dir / FIGURES) or []
    for f in figures:
        f["png"] = (fig_dir / f["file"]).read_bytes() if (fig_dir / f["file"]).is_file() else b""
    # only files a published run folder holds too (publish.artifacts), so links keep working
    models_dir = Path(params.train.models_dir)
    sides = [
        f
        for name in metrics
        for f in sorted(models_dir.glob(f"**/{name}/*"))
        if f.name in ("train.json", "history.csv")
    ]
    raw = [
        metrics_dir / METRICS,
        metrics_dir / COMPARISON,
        Path(vz.validation_summary),
        *sides,
        *sorted(metrics_dir.glob("details/*/per_class.csv")),
        *sorted(metrics_dir.glob("confusion/*.csv")),
        *sorted(metrics_dir.glob("curves/*.csv")),
        *[fig_dir / f["file"] for f in figures],
    ]
    base = report_path.parent.resolve()
    links = [
        (p.as_posix(), Path(os.path.relpath(p.resolve(), base)).as_posix())
        for p in raw
        if p.is_file()
    ]
    info = _json(prepared_dir / "dataset.json") or {}
    return {
        # re-rendered by hand (no `run`): the id visualize gave this report, as publish does
        "run_id": run or params.publish.run_id or recorded_run_id(fig_dir) or run_id(None),
        "commit": git_commit(None),
        "created": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC",
        "dataset": {
            "name": info.get("name", "?"),
            "source": info.get("source", "?"),
            "classes": info.get("classes", []),
            "image_size": info.get("image_size"),
            "n": info.get("n", {}),
            "split": ev.split,
            "version": dataset_version(prepared_dir) if info else "?",
        },
        "params": params.to_dict(),
        "metrics": metrics,
        "models": models,
        "comparison": _csv(metrics_dir / COMPARISON),
        "validation": _json(Path(vz.validation_summary)),
        "figures": figures,
        "links": links,
    }


def build_html(ctx: dict) -> str:
    """The report page; pure (every image inline, no external resource)."""
    e = html.escape
    d = ctx["dataset"]
    out = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>run "
        f"{e(ctx['run_id'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Run {e(ctx['run_id'])}</h1>",
        _kv(
            {
                "created": ctx["created"],
                "git commit": ctx["commit"] or "?",
                "dataset": f"{d['name']} ({d['source']}), {len(d['classes'])} classes, "
                f"{d['image_size']} px",
                "images per split": ", ".join(f"{k} {v}" for k, v in d["n"].items()),
                "dataset version": d["version"],
                "metrics measured on": f"{d['split']} split",
            }
        ),
    ]
    sections = [
        "metrics",
        *ctx["models"],
        *[s for s in SECTIONS if s != "comparison"],
        "validation",
        "params",
        "files",
    ]
    out.append(
        "<nav>"
        + " · ".join(f"<a href='#{_id(s)}'>{e(SECTIONS.get(s, s))}</a>" for s in sections)
        + "</nav>"
    )
    out.append("<h2 id=metrics>Metrics</h2>")
    out.append(_table(_metric_rows(ctx["metrics"])) if ctx["metrics"] else "<p>none</p>")
    if ctx["comparison"]:
        out.append("<h3>Strategies and sweep</h3>" + _table(ctx["comparison"]))
    out += _figures(ctx["figures"], "comparison")
    for name, m in ctx["models"].items():
        out.append(f"<h2 id='{_id(name)}'>{e(name)}</h2>")
        if m["per_class"]:
            out.append("<h3>Per class</h3>" + _table(m["per_class"]))
        if m["pairs"]:
            out.append(
                "<h3>Most confused class pairs</h3>"
                + _table(
                    [{k: v for k, v in p.items() if k not in ("ia", "ib")} for p in m["pairs"]]
                )
            )
        out += _figures(ctx["figures"], name)
    for s in ("data", "activations", "filters"):
        out.append(f"<h2 id={s}>{SECTIONS[s]}</h2>")
        out += _figures(ctx["figures"], s)
    out.append("<h2 id=validation>Validation</h2>")
    v = ctx["validation"]
    if v is None:
        out.append("<p>no validation summary found for this run</p>")
    else:
        passed = v.get("passed") if isinstance(v, dict) else None
        badge = {True: "<b class=ok>passed</b>", False: "<b class=bad>failed</b>"}.get(passed, "")
        out.append(f"<p>{badge}</p><pre>{e(json.dumps(v, indent=2, default=str))}</pre>")
    out.append(
        "<h2 id=params>Params</h2><pre>"
        + e(yaml.safe_dump(_plain(ctx["params"]), sort_keys=False))
        + "</pre>"
    )
    out.append(
        "<h2 id=files>Raw files</h2><ul>"
        + "".join(f"<li><a href='{e(href)}'>{e(label)}</a></li>" for label, href in ctx["links"])
        + "</ul></body></html>"
    )
    return "\n".join(out)


def write_report(*, params: Params, run: str | None = None) -> Path:
    path = Path(params.visualize.report)
    atomic_write_text(path, build_html(collect(params, report_path=path, run=run)))
    return path


# --- helpers ---------------------------------------------------------------------------------

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}figure{margin:1em 0}figcaption{color:#555}
pre{background:#f7f7f7;padding:.6em;overflow:auto;max-height:30em}nav{margin:1em 0}
.ok{color:#176b1d}.bad{color:#b00020}"""


def _figures(figures: list[dict], section: str) -> list[str]:
    return [
        f"<figure><img alt='{html.escape(f['file'])}' src='data:image/png;base64,"
        f"{base64.b64encode(f['png']).decode()}'><figcaption>{html.escape(f['caption'])}"
        "</figcaption></figure>"
        for f in figures
        if f["section"] == section and f["png"]
    ]


def _metric_rows(metrics: dict) -> list[dict]:
    return [{"model": name, **m} for name, m in metrics.items()]


def _table(rows: list[dict]) -> str:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _kv(pairs: dict) -> str:
    return (
        "<table>"
        + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in pairs.items()
        )
        + "</table>"
    )


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float) or (isinstance(v, str) and _is_float(v) and "." in v):
        return f"{float(v):.4f}"
    return str(v)


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _id(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in s)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


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
    print(f"report    {write_report(params=params).resolve()}")


if __name__ == "__main__":
    run_main(main)
