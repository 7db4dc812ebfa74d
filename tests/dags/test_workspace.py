"""Per-run workspaces over one shared DVC cache: what makes a no-change run cheap.

A two-stage DVC project (no ML) in tmp: the stages log every real execution to a file
outside the workspaces, so the tests see exactly what ran.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from resnet_retrain import workspace

STAGE = """
import json, os, pathlib, sys, yaml
name = sys.argv[1]
params = yaml.safe_load(open("params.yaml"))
with open(os.environ["RAN_LOG"], "a") as log:
    log.write(name + "\\n")
if params["n"] < 0:
    print("error: n must be >= 0 (params.yaml n)", file=sys.stderr)
    sys.exit(2)
src = pathlib.Path("out/a.json").read_text() if name == "b" else ""
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path(f"out/{name}.json").write_text(json.dumps({"n": params["n"], "src": src}))
"""


def make_project(root: Path) -> Path:
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc/config").write_text("[core]\n    no_scm = true\n")
    (root / "params.yaml").write_text("n: 3\n")
    (root / "stage.py").write_text(STAGE)
    (root / "dvc.yaml").write_text(
        textwrap.dedent("""
        stages:
          a:
            cmd: python stage.py a
            deps: [stage.py]
            params: [n]
            outs: [out/a.json]
          b:
            cmd: python stage.py b
            deps: [stage.py, out/a.json]
            outs: [out/b.json]
    """)
    )
    return root


def new_workspace(project: Path, tmp: Path, run_id: str, n: int = 3) -> Path:
    text = yaml.safe_dump({"n": n})
    return workspace.create(
        project=project,
        root=tmp / "ws",
        run_id=run_id,
        params_yaml=text,
        cache_dir=tmp / "cache",
        exclude=[],
    )


@pytest.mark.slow
def test_unchanged_stages_are_restored_in_a_new_workspace(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    ran = tmp_path / "ran.log"
    env = {"RAN_LOG": str(ran)}

    first = new_workspace(project, tmp_path, "run-1")
    assert [workspace.run_stage(first, s, env=env) for s in ("a", "b")] == ["ran", "ran"]
    assert ran.read_text().split() == ["a", "b"]

    second = new_workspace(project, tmp_path, "run-2")  # same code and params
    assert [workspace.run_stage(second, s, env=env) for s in ("a", "b")] == ["restored"] * 2
    assert ran.read_text().split() == ["a", "b"]  # nothing ran again
    assert json.loads((second / "out/b.json").read_text())["n"] == 3  # outputs are there

    third = new_workspace(project, tmp_path, "run-3", n=5)  # a param changed: both re-run
    assert [workspace.run_stage(third, s, env=env) for s in ("a", "b")] == ["ran", "ran"]
    assert json.loads((first / "out/a.json").read_text())["n"] == 3  # runs stay isolated


@pytest.mark.slow
def test_a_stage_user_error_is_reported_as_one_line_and_not_retryable(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    ws = new_workspace(project, tmp_path, "bad", n=-1)
    with pytest.raises(workspace.StageFailed) as err:
        workspace.run_stage(ws, "a", env={"RAN_LOG": str(tmp_path / "ran.log")})
    assert err.value.user_error and err.value.code == 2
    assert str(err.value) == "a: n must be >= 0 (params.yaml n)"


def test_run_ids_become_safe_paths() -> None:
    assert (
        workspace.safe_id("manual__2026-01-02T03:04:05.123+00:00")
        == "manual__2026-01-02T03-04-05.123+00-00"
    )
    assert workspace.safe_id("../../etc") == "etc"  # never a path outside the workspace root
    assert workspace.safe_id("a/b/../c") == "a-b-..-c"


def test_a_relative_publish_destination_means_the_projects_folder_not_the_workspaces(
    tmp_path: Path,
) -> None:
    from tasks.common import UserError

    project = tmp_path / "project"
    assert workspace.project_destination(project, "published") == str(project / "published")
    assert workspace.project_destination(project, "out/models") == str(project / "out/models")
    # destinations that already name one place are left as they are
    for fixed in ("s3://bucket/prefix", "file:///srv/models", str(tmp_path / "abs")):
        assert workspace.project_destination(project, fixed) is None
    with pytest.raises(UserError, match="file:///srv/models"):
        workspace.project_destination(project, "file://published")  # host "published", no path


def test_a_project_without_git_is_copied_without_its_stage_outputs(tmp_path: Path) -> None:
    # a Docker image holds the project without .git (and its DVC config without no_scm)
    project = make_project(tmp_path / "project")
    (project / ".dvc/config").write_text("")
    (project / "out").mkdir()
    (project / "out/a.json").write_text("{}")  # a stage output (from an earlier dvc repro)
    (project / "notes.txt").write_text("not a stage output")
    files = {str(f) for f in workspace.source_files(project, exclude=[])}
    assert {"stage.py", "dvc.yaml", "params.yaml", "notes.txt"} <= files
    assert "out/a.json" not in files


def test_a_cpu_workers_task_log_leaves_out_tensorflows_cuda_probe_lines() -> None:
    # as TensorFlow 2.21 prints them on a machine without a GPU (captured from a stage)
    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796162372.387049   12529 cudart_stub.cc:31] Could not find cuda drivers "
        "on your machine, GPU will not be used.",
        "E0000 00:00:1796162453.553877   12529 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    ]
    kept = [
        "Running stage 'train_fine_tune':",
        "fine_tune  val accuracy 0.9161  163 s  -> models/fine_tune",
        "error: train.epochs: 0 is out of range: must be >= 1",
    ]
    assert all(workspace.gpu_probe_noise(line) for line in noise)
    assert not any(workspace.gpu_probe_noise(line) for line in kept)


def test_only_a_new_champion_makes_a_published_asset_event(tmp_path: Path) -> None:
    record = tmp_path / "publish.json"

    def outcome(run_id: str = "run-2", **decision) -> dict:
        record.write_text(
            json.dumps(
                {
                    "run_id": "run-2",
                    "uri": "file:///p/runs/run-2",
                    "report": "file:///p/runs/run-2/reports/report.html",
                    "metric": "accuracy",
                    "value": 0.95,
                    "champion_run": "run-1",
                    "champion_value": 0.93,
                    "dataset_version": "md5:abc.dir",
                    "reason": "why",
                    **decision,
                }
            )
        )
        return workspace.publish_outcome(record, run_id)

    extra = workspace.champion_event(outcome(status="champion", promoted=True))
    assert extra == {
        "run_id": "run-2",
        "metric": "accuracy",
        "value": 0.95,
        "champion_value": 0.93,
        "dataset_version": "md5:abc.dir",
        "report": "file:///p/runs/run-2/reports/report.html",
        "uri": "file:///p/runs/run-2",
        "drifted": None,
    }
    assert workspace.champion_event(outcome(status="challenger", promoted=False)) is None
    assert workspace.champion_event(outcome(status="champion", promoted=False)) is None  # held
    # the record is an earlier run's (restored from the run-cache): nothing new, no event
    assert workspace.champion_event(outcome("run-3", status="champion", promoted=True)) is None


def test_the_publish_result_says_when_the_run_retrained_on_drifted_data(tmp_path: Path) -> None:
    record = tmp_path / "publish.json"

    def data(**drift) -> str:
        record.write_text(json.dumps({"run_id": "run-2", "status": "champion", **drift}))
        return workspace.publish_outcome(record, "run-2")["data"]

    assert data(drifted=True, drifted_classes=["3", "8"]) == (
        "retrained on drifted data (most shifted classes: 3, 8)"
    )
    assert data(drifted=False, drifted_classes=[]) == "no drift against the champion's data"
    assert data(drifted=None) == data() and "not checked" in data()
