"""The retraining DAG end to end (`dag.test()`), on a copy of the project, the embedded
dataset and tiny training, publishing to a moto S3 server on 127.0.0.1.

Three runs of one DAG: a full run (champion), the same run again (nothing retrained,
nothing published), and a run with the store down (publish fails after its retries; the
bucket and the champion are unchanged, a failure record names the cause). The champion
gate against worse models is tested on real S3 in tests/dags/test_publish.py. Each run is
a subprocess with its own AIRFLOW_HOME (SQLite in tmp).
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


def listing(client, bucket: str) -> dict[str, str]:
    objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in objects}


def get_json(client, bucket: str, key: str) -> dict:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_dag_runs_end_to_end_skips_unchanged_work_and_survives_a_store_outage(
    tmp_path: Path, s3_server
) -> None:
    project = copy_project(tmp_path / "project", tmp_path)
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    if "publish" not in stages:
        pytest.fail("dvc.yaml has no publish stage: the DAG would publish nothing")
    client = s3_server.client()
    client.create_bucket(Bucket="e2e")
    airflow = Airflow(project, tmp_path / "airflow_home")
    tiny = [
        "prepare.max_per_class=12",
        "validate.min_per_class=1",
        "backbone.epochs=1",
        "visualize.ascent_steps=2",
        "publish.destination=s3://e2e/models",
        f"publish.endpoint_url={s3_server.endpoint_url}",
        "publish.retries=2",
        "publish.backoff=0.2",
        "publish.timeout=3",
    ]
    conf = {
        "backbone.weights": "none",
        "train.epochs": 1,
        "train.fine_tune.epochs": 1,
        "train.sweep.unfreeze": [1],
        "overrides": tiny,
    }

    # 1. a full run: every task succeeds; the run and its manifest are in the bucket
    first = airflow.run(conf)
    assert first["state"] == "success", first["log"][-5000:]
    assert set(first["tasks"].values()) <= {"success", "skipped"}, first["tasks"]
    assert {t.split("[")[0] for t in first["tasks"]} >= set(stages)
    run_id = first["publish"]["uri"].rsplit("/", 1)[-1]
    assert first["publish"]["published"] and first["publish"]["status"] == "champion"
    manifest = get_json(client, "e2e", f"models/runs/{run_id}/manifest.json")
    for f in manifest["files"]:
        body = client.get_object(Bucket="e2e", Key=f"models/runs/{run_id}/{f['path']}")
        data = body["Body"].read()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]
    assert any(f["path"].endswith("model.keras") for f in manifest["files"])
    report = client.get_object(Bucket="e2e", Key=f"models/runs/{run_id}/reports/report.html")
    assert f"<h1>Run {run_id}</h1>" in report["Body"].read().decode()  # one id everywhere
    assert manifest["dataset_version"].startswith("md5:")
    champion = get_json(client, "e2e", "models/champion.json")
    assert champion["run_id"] == run_id
    after_first = listing(client, "e2e")

    # 2. nothing changed: nothing retrained, nothing published
    second = airflow.run(conf)
    assert second["state"] == "success", second["log"][-5000:]
    assert second["publish"]["published"] is False
    assert not re.search(r"Running stage '(backbone|features|train_|sweep)", second["log"])
    assert listing(client, "e2e") == after_first

    # 3. the store is down: publish retries, then fails; the bucket is untouched
    dead = f"publish.endpoint_url=http://127.0.0.1:{free_port()}"
    down = airflow.run(conf | {"overrides": [*tiny, dead]})
    assert down["state"] == "failed"
    assert down["tasks"]["publish"] == "failed"
    assert listing(client, "e2e") == after_first
    assert get_json(client, "e2e", "models/champion.json") == champion
    records = sorted((tmp_path / "failures").rglob("publish.try*.json"))
    assert [r.name for r in records] == ["publish.try1.json", "publish.try2.json"]  # retried
    last = json.loads(records[-1].read_text())
    assert "store unreachable" in last["error"] and last["exit_code"] == 75
    assert not last["user_error"]
