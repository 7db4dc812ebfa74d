"""What `make run` prints at the end: the prepared dataset, metrics per model, the answer
(tasks/headline.py), the champion decision and the report.

python -m tasks.summary [--params params.yaml]
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.common import run_main
from tasks.dataset import open_prepared
from tasks.evaluate import metrics_table
from tasks.headline import answer
from tasks.layout import METRICS
from tasks.params import params_from_cli
from tasks.prepare import summary
from tasks.validate import verdict


def run_summary(
    *, metrics_file: Path, report: Path, metric: str = "accuracy", record: Path | None = None
) -> str:
    """Metrics per model, the answer, publish's decision and where the reports are, or what
    to run to get them."""
    metrics = _json(metrics_file)
    lines = [
        metrics_table(metrics)
        if metrics
        else f"metrics   none yet ({metrics_file}): run `dvc repro evaluate`"
    ]
    lines += [f"answer    {s}" for s in answer(metrics or {}, metric=metric)["sentences"]]
    lines.append(
        f"report    {report.resolve()}"
        if report.is_file()
        else f"report    not built yet ({report}): run `dvc repro visualize`"
    )
    published = _json(record) if record else None
    if published:
        lines.append(f"publish   {published['status']}: {published['reason']}")
        if published.get("report"):
            lines.append(f"          the report with this decision: {published['report']}")
    return "\n".join(lines)


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> None:
    params = params_from_cli(__doc__)
    print(summary(open_prepared(Path(params.data.prepared_dir))))
    # --- validation (tasks/validate.py) ---
    print()
    print(verdict(Path(params.validate.out_dir)))
    # --- evaluation and report ---
    print()
    metrics_file = Path(params.evaluate.out_dir) / METRICS
    print(
        run_summary(
            metrics_file=metrics_file,
            report=Path(params.visualize.report),
            metric=params.publish.metric,
            record=Path(params.publish.record),
        )
    )


if __name__ == "__main__":
    run_main(main)
