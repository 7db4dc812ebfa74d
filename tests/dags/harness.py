"""Run the retraining DAG for real, the way the e2e tests and `benchmarks.dag` do.

`copy_project` copies the project's code and config (no data, no cache) to a folder with its
own orchestration settings; `Airflow` gives it a private AIRFLOW_HOME (SQLite) and runs
`dag.test()` in a child process, returning the run's state, task states, what the
publish task returned and the asset events the run emitted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]

DAG_ID = "resnet_retrain"
RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import retrain
from airflow.models.asset import AssetEvent, AssetModel
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

dr = retrain.retrain.test(run_conf=json.loads(sys.argv[2]))
with create_session() as session:
    tis = dr.get_task_instances(session=session)
    states = {ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): str(ti.state)
              for ti in tis}
    row = session.query(XComModel).filter_by(run_id=dr.run_id, task_id="publish",
                                             key="return_value").first()
    publish = XComModel.deserialize_value(row) if row is not None else None
    events = [
        {"asset": name, "extra": e.extra}
        for e, name in session.query(AssetEvent, AssetModel.name)
        .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        .filter(AssetEvent.source_run_id == dr.run_id)
    ]
print("RESULT " + json.dumps({"run_id": dr.run_id, "state": str(dr.state), "tasks": states,
                             "publish": publish, "asset_events": events}, default=str))
"""


def copy_project(dest: Path, tmp: Path) -> Path:
    """The project's code and config (no data, no cache) with test orchestration settings."""
    sys.path.insert(0, str(ROOT / "dags"))
    from resnet_retrain.workspace import source_files

    for rel in source_files(ROOT, exclude=[]):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["orchestration"] = {
        **(params.get("orchestration") or {}),
        "workspace_dir": str(tmp / "workspaces"),
        "failure_dir": str(tmp / "failures"),
        "retries": 1,
        "retry_delay_s": 1,
        "max_retry_delay_s": 2,
        "aws_conn_id": None,
    }
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


class Airflow:
    def __init__(self, project: Path, home: Path) -> None:
        self.project = project
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        for cmd in (["db", "migrate"], ["pools", "set", "gpu", "1", "training"]):
            subprocess.run(
                [sys.executable, "-m", "airflow", *cmd],
                env=self.env,
                check=True,
                capture_output=True,
                timeout=600,
            )

    def run(self, conf: dict) -> dict:
        proc = subprocess.run(
            [sys.executable, "-c", RUNNER, str(self.project / "dags"), json.dumps(conf)],
            env=self.env,
            cwd=self.project,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
        return json.loads(lines[-1].removeprefix("RESULT ")) | {"log": proc.stdout + proc.stderr}
