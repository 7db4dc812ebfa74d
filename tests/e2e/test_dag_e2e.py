"""The retraining DAG end to end (`dag.test()`), on a copy of the project, the embedded
dataset and tiny training, publishing to the default destination (`published`, relative).

Four runs of one DAG, each a subprocess with its own AIRFLOW_HOME (SQLite in tmp):
1. a full run: champion, published into the *project's* `published/` (a relative
   destination is the project's under Airflow as under `dvc repro`), and still there after
   `cleanup` removed the run's workspace;
2. the same run again: nothing retrained, nothing published;
3. a run that only changes the gate: nothing retrained, publish re-runs and is gated against
   the first run's champion, which stays;
4. a run publishing to a store that is down (S3 on a dead port): publish fails after its
   retries, a failure record names the cause, nothing published changes.
S3 publishing itself (and the gate against worse models) is tested on a moto server in
tests/dags/test_publish.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.dags.harness import Airflow, copy_project

pytestmark = pytest.mark.slow

TRAINED = re.compile(r"Running stage '(backbone|features|train_|sweep)")


def listing(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file below root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_dag_publishes_into_the_project_keeps_the_champion_across_runs_and_survives_an_outage(
    tmp_path: Path, aws_env
) -> None:
    project = copy_project(tmp_path / "project", tmp_path)
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    if "publish" not in stages:
        pytest.fail("dvc.yaml has no publish stage: the DAG would publish nothing")
    published = project / "published"  # params.yaml's default destination, relative
    airflow = Airflow(project, tmp_path / "airflow_home")
    tiny = [
        "prepare.max_per_class=12",
        "validate.min_per_class=1",
        "backbone.epochs=1",
        "visualize.ascent_steps=2",
        "publish.retries=2",
        "publish.timeout=3",
    ]
    conf = {
        "backbone.weights": "none",
        "train.epochs": 1,
        "train.fine_tune.epochs": 1,
        "overrides": tiny,
    }

    # 1. a full run: every task succeeds; the run is in the project's published/ and stays
    first = airflow.run(conf)
    assert first["state"] == "success", first["log"][-5000:]
    assert set(first["tasks"].values()) <= {"success", "skipped"}, first["tasks"]
    ran = {t.split("[")[0] for t in first["tasks"]}
    opt_in = {"sweep", "study"}  # the unfreezing study: only with orchestration.study: true
    assert ran >= set(stages) - opt_in and not ran & opt_in, sorted(ran)
    assert first["publish"]["published"] and first["publish"]["status"] == "champion"
    run_id = first["publish"]["uri"].rsplit("/", 1)[-1]
    (event,) = first["asset_events"]  # a new champion: the one `published` asset event
    assert event["asset"] == "resnet_retrain_published"
    assert event["extra"]["run_id"] == run_id and event["extra"]["metric"] == "accuracy"
    assert event["extra"]["report"] == f"{first['publish']['uri']}/reports/report.html"
    assert first["publish"]["uri"] == f"{published.resolve().as_uri()}/runs/{run_id}"
    assert not (tmp_path / "workspaces" / run_id).exists()  # cleanup removed the workspace...
    run_dir = published / "runs" / run_id  # ...but not what the run published
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for f in manifest["files"]:
        data = (run_dir / f["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]
    assert any(f["path"].endswith("model.keras") for f in manifest["files"])
    report = (run_dir / "reports/report.html").read_text()
    assert f"<h1>Run {run_id}</h1>" in report  # one id everywhere
    assert "New champion:" in report and "no champion yet" in report  # publish's decision
    assert manifest["dataset_version"].startswith("md5:")
    champion = json.loads((published / "champion.json").read_text())
    assert champion["run_id"] == run_id
    after_first = listing(published)

    # 2. nothing changed: nothing retrained, nothing published
    second = airflow.run(conf)
    assert second["state"] == "success", second["log"][-5000:]
    assert second["publish"]["published"] is False
    assert second["asset_events"] == []  # nothing new: no deploy DAG fires
    assert not TRAINED.search(second["log"])
    assert listing(published) == after_first

    # 3. only the gate changed: publish runs again, against the first run's champion
    stricter = conf | {"overrides": [*tiny, "publish.min_improvement=0.5"]}
    third = airflow.run(stricter)
    assert third["state"] == "success", third["log"][-5000:]
    assert not TRAINED.search(third["log"])
    assert third["publish"]["published"] and third["publish"]["status"] == "challenger"
    assert third["publish"]["champion_value"] == champion["value"]
    assert third["asset_events"] == []  # a challenger is no new champion
    assert json.loads((published / "champion.json").read_text()) == champion
    third_id = third["publish"]["uri"].rsplit("/", 1)[-1]
    assert (published / "runs" / third_id / "manifest.json").is_file()
    assert (run_dir / "manifest.json").is_file()
    after_third = listing(published)

    # 4. the store is down: publish retries, then fails; nothing published changes
    dead = [
        "publish.destination=s3://e2e/models",
        f"publish.endpoint_url=http://127.0.0.1:{free_port()}",
    ]
    down = airflow.run(conf | {"overrides": [*tiny, *dead]})
    assert down["state"] == "failed"
    assert down["tasks"]["publish"] == "failed"
    assert listing(published) == after_third
    records = sorted((tmp_path / "failures").rglob("publish.try*.json"))
    assert [r.name for r in records] == ["publish.try1.json", "publish.try2.json"]  # retried
    last = json.loads(records[-1].read_text())
    assert "store unreachable" in last["error"] and last["exit_code"] == 75
    assert not last["user_error"]
