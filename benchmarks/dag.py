"""The retraining DAG: parse time of dags/retrain.py, and a full run vs a no-change run.

Parse time is what `airflow dags report` shows: a DagBag over dags/ in a child process
(Airflow already imported, as in the DAG processor), the first parse and the median of five
more. Target: <= 0.3 s.

Runs use `dag.test()` on a copy of the project with a fresh DVC cache, the embedded digits
dataset and tiny training (the settings are printed), publishing to a local folder: first
a full run, then the same run again, where every stage is restored from the shared DVC
cache (nothing retrained, nothing published). The ratio is the point: the no-change run
costs Airflow + one `dvc repro` per stage, not training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._util import ROOT, table

TINY = {
    "backbone.weights": "none",
    "train.epochs": 1,
    "train.fine_tune.epochs": 1,
    "train.sweep.unfreeze": [1],
    "overrides": [
        "prepare.max_per_class=12",
        "validate.min_per_class=1",
        "backbone.epochs=1",
        "visualize.ascent_steps=2",
    ],
}
PARSE = """
import json, statistics, sys, time
from airflow.dag_processing.dagbag import DagBag
times = []
for _ in range(6):
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    times += [sum(s.duration.total_seconds() for s in bag.dagbag_stats
                  if s.file.endswith("retrain.py"))]
print(json.dumps({"first": times[0], "median": statistics.median(times[1:])}))
"""


def parse_times(home: Path) -> dict[str, float]:
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", PARSE, str(ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.dags.harness import Airflow, copy_project

    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp_dir:
        tmp = Path(tmp_dir)
        parse = parse_times(tmp / "parse_home")
        project = copy_project(tmp / "project", tmp)
        airflow = Airflow(project, tmp / "airflow_home")
        conf = TINY | {
            "overrides": [*TINY["overrides"], f"publish.destination={tmp / 'published'}"]
        }
        runs = {}
        for name in ("full run", "no-change run"):
            start = time.perf_counter()
            result = airflow.run(conf)
            runs[name] = (time.perf_counter() - start, result)
            if result["state"] != "success":
                raise RuntimeError(f"{name} failed: {result['tasks']}")
    full, again = runs["full run"][0], runs["no-change run"][0]
    print(
        table(
            ["measure", "seconds", "note"],
            [
                ["parse dags/retrain.py (first)", f"{parse['first']:.3f}", "DagBag in a child"],
                ["parse dags/retrain.py (median of 5)", f"{parse['median']:.3f}", "target <= 0.3"],
                [
                    "full run (tiny training)",
                    f"{full:.1f}",
                    f"{len(runs['full run'][1]['tasks'])} task instances",
                ],
                [
                    "no-change run",
                    f"{again:.1f}",
                    f"{again / full:.2f} x the full run; published: "
                    f"{(runs['no-change run'][1]['publish'] or {}).get('published')}",
                ],
            ],
        )
    )
    print(f"\nsettings: {json.dumps(TINY)}")


if __name__ == "__main__":
    main()
