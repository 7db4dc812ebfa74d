"""A bad value from the trigger form, on the real DAG: the first task fails once (no retry),
with the one-line message, and the failure record calls it a user error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dags.harness import Airflow, copy_project


@pytest.mark.slow
def test_a_bad_form_value_fails_configure_once_as_a_user_error(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", tmp_path)
    airflow = Airflow(project, tmp_path / "airflow_home")

    result = airflow.run({"overrides": ["train.epochs=-3"]})

    assert result["state"] == "failed"
    assert result["tasks"]["configure"] == "failed"
    assert result["tasks"]["fetch"] == "upstream_failed"  # nothing else ran
    records = sorted((tmp_path / "failures").rglob("configure.try*.json"))
    assert [r.name for r in records] == ["configure.try1.json"]  # not retried
    record = json.loads(records[0].read_text())
    assert record["user_error"] is True and "not retried" in record["hint"]
    assert "train.epochs" in record["error"]
    assert "user error: " in result["log"] and "train.epochs" in result["log"]
    # the message, not the chain of frames behind it
    assert "The above exception was the direct cause" not in result["log"]
