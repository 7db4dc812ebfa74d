"""The retraining DAG: loads cleanly, stays light, follows dvc.yaml, validates run params,
and builds the Kubernetes pod spec for training stages."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tasks.common import UserError
from tasks.params import load_params
from tests.dags.conftest import DAGS, ROOT

HEAVY = (
    "tensorflow",
    "keras",
    "great_expectations",
    "dvc",
    "sklearn",
    "matplotlib",
    "boto3",
    "botocore",
    "kubernetes",
    "pandas",
)
HELPERS = ("configure", "push", "cleanup")


@pytest.fixture(scope="module")
def dag():
    import retrain

    return retrain.retrain


def last_line_of(code: str) -> str:
    """Run `code` in a fresh interpreter (nothing imported yet); its last printed line."""
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    return r.stdout.strip().splitlines()[-1]


def test_dagbag_loads_the_dags_folder_without_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert "resnet_retrain" in bag.dag_ids
    dag = bag.dags["resnet_retrain"]
    assert dag.doc_md and "ResNet-50 retraining" in dag.doc_md
    assert "retraining" in dag.tags and dag.default_args["owner"]
    assert dag.catchup is False and dag.max_active_runs == 1
    # weekly, and also whenever the dataset Asset is updated (data-aware)
    params = load_params(ROOT / "params.yaml").orchestration
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert params.dataset_asset in repr(dag.timetable.asset_condition)


def test_importing_the_dag_file_imports_nothing_heavy() -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(DAGS)!r})
        import retrain
        print([m for m in {HEAVY!r} if m in sys.modules])
    """)
    out = last_line_of(code)
    assert out == "[]"


def dvc_groups(project: Path) -> set[str]:
    """Stage groups as DVC itself lists them (matrix items folded into their group)."""
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return {line.split("@")[0] for line in out.split() if line.strip()}


def stage_tasks(dag) -> set[str]:
    return {
        t.task_id
        for t in dag.tasks
        if t.task_id not in HELPERS and not t.task_id.endswith("_items")
    }


def test_dag_stages_are_exactly_dvc_yaml_stages_in_dvcs_order(dag) -> None:
    assert stage_tasks(dag) == dvc_groups(ROOT)
    # every DVC edge (stage B reads what stage A writes) is an ordering in the DAG
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        for b, a in graph.edges:
            down, up = b.name.split("@")[0], a.name.split("@")[0]
            assert up in dag.get_task(down).get_flat_relative_ids(upstream=True), (up, down)


def test_evaluate_waits_for_the_sweep_whose_models_it_scores(dag) -> None:
    # not a DVC dep (`dvc repro publish` must not run 12 fine-tunings), but evaluate.models
    # lists sweep/*: scoring before the sweep ends would leave it out of the run's report
    assert "sweep" in dag.get_task("evaluate").get_flat_relative_ids(upstream=True)


def test_every_task_retries_with_backoff_and_records_failures(dag) -> None:
    for t in dag.tasks:
        assert t.retries >= 1 and t.retry_exponential_backoff >= 2, t.task_id
        assert t.on_failure_callback and t.on_retry_callback, t.task_id
        assert t.execution_timeout is not None, t.task_id


def write_project(tmp: Path, params_extra: dict | None = None) -> Path:
    """A project folder whose dvc.yaml has training stages and a sweep matrix."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in (params_extra or {}).items():
        section, name = key.split(".", 1)
        raw.setdefault(section, {})[name] = value
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp / "dvc.yaml").write_text(
        textwrap.dedent("""
        stages:
          prepare:
            cmd: python -m tasks.prepare
            outs: ["${data.prepared_dir}"]
          train_fine_tune:
            cmd: python -m tasks.train --set train.strategy=fine_tune
            deps: ["${data.prepared_dir}"]
            outs: [models/fine_tune]
          sweep:
            matrix:
              unfreeze: [1, 3]
              augment: [false, true]
            cmd: python -m tasks.train --set train.unfreeze=${item.unfreeze}
            deps: ["${data.prepared_dir}"]
            outs: ["models/sweep/unfreeze-${item.unfreeze}-aug-${item.augment}"]
          evaluate:
            cmd: python -m tasks.evaluate
            deps: [models/fine_tune]
            metrics: [metrics/metrics.json]
          publish:
            cmd: python -m tasks.publish
            deps: [metrics, models/fine_tune]
            outs: [reports/publish.json]
    """)
    )
    return tmp


def build(tmp: Path, **orchestration):
    import retrain

    project = write_project(tmp)
    params = load_params(project / "params.yaml")
    params = dataclasses.replace(
        params, orchestration=dataclasses.replace(params.orchestration, **orchestration)
    )
    return retrain.build_dag(params, project=project)


def test_graph_follows_dvc_yaml_including_matrix_paths(tmp_path: Path) -> None:
    dag = build(tmp_path)
    up = {t.task_id: t.upstream_task_ids for t in dag.tasks}
    assert "prepare" in up["train_fine_tune"] and "prepare" in up["sweep"]
    # evaluate scores models/sweep/* (evaluate.models) without a DVC dep: it waits all the same
    assert {"train_fine_tune", "sweep"} <= up["evaluate"]
    assert up["publish"] >= {"evaluate"} and "train_fine_tune" not in up["publish"]  # reduced
    assert dag.get_task("sweep").__class__.__name__.endswith("MappedOperator")
    assert "sweep_items" in up["sweep"]
    for name in ("train_fine_tune", "sweep"):
        t = dag.get_task(name)
        assert t.pool == "gpu" and t.execution_timeout == timedelta(minutes=360)
    assert dag.get_task("evaluate").pool != "gpu"
    assert "publish" in {t.task_id for t in dag.tasks if t.outlets}


def test_kubernetes_executor_runs_training_as_gpu_pods(tmp_path: Path) -> None:
    dag = build(
        tmp_path,
        training_executor="kubernetes",
        trainer_image="reg.local/trainer:1.2",
        kubernetes_secret="s3-creds",
        kubernetes_gpus=2,
    )
    pod_task = dag.get_task("train_fine_tune")
    assert type(pod_task).__name__ == "KubernetesPodOperator"
    assert pod_task.pool == "gpu"
    assert dag.get_task("evaluate").__class__.__name__ != "KubernetesPodOperator"
    assert dag.get_task("sweep").operator_class.__name__ == "KubernetesPodOperator"

    pod = pod_task.build_pod_request_obj(dry_run=True)  # no cluster needed
    container = pod.spec.containers[0]
    assert container.image == "reg.local/trainer:1.2"
    assert not container.command  # the image's entrypoint configures DVC, then runs the args
    assert container.args[:2] == ["/bin/sh", "-c"] and container.args[-1] == "train_fine_tune"
    script = container.args[2]
    assert 'dvc repro --pull "$1"' in script and 'dvc push --run-cache "$1"' in script
    assert container.resources.limits["nvidia.com/gpu"] == "2"
    assert [e.secret_ref.name for e in container.env_from] == ["s3-creds"]
    env = {e.name: e.value for e in container.env}
    assert "configure" in env["RUN_PARAMS_YAML"]  # rendered from the configure task's XCom
    assert any(t.key == "nvidia.com/gpu" for t in pod.spec.tolerations)


def test_kubernetes_provider_is_imported_only_when_chosen() -> None:
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(DAGS)!r})
        import retrain
        # (airflow.exceptions itself imports the provider's tiny exceptions module)
        print([m for m in ("airflow.providers.cncf.kubernetes.operators.pod", "kubernetes")
               if m in sys.modules])
    """)
    out = last_line_of(code)
    assert out == "[]"


def test_form_rejects_bad_values_with_a_clear_message(dag) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    def check(conf: dict) -> None:
        params = copy.deepcopy(dag.params)  # a copy, like a triggered run gets
        params.update(conf)
        params.validate()

    check({"train.epochs": 3, "data.source": "cifar10", "overrides": ["train.seed=7"]})
    with pytest.raises(ParamValidationError, match="data.source.*'mnist' is not one of"):
        check({"data.source": "mnist"})
    with pytest.raises(ParamValidationError, match="train.epochs.*'three' is not of type"):
        check({"train.epochs": "three"})
    with pytest.raises(ParamValidationError, match="overrides.*does not match"):
        check({"overrides": ["epochs 3"]})


def test_out_of_range_values_fail_the_run_before_any_work(tmp_path: Path) -> None:
    from resnet_retrain import run_params, workspace

    defaults = {"train.epochs": 30}
    overrides = run_params.overrides_from({"train.epochs": 0}, defaults)
    with pytest.raises(UserError, match=r"train.epochs: 0 is out of range: must be >= 1"):
        workspace.params_text(ROOT / "params.yaml", overrides)
    overrides = run_params.overrides_from(
        {"overrides": ["publish.min_improvement=0.02"], "train.epochs": 30}, defaults
    )
    assert overrides == {"publish.min_improvement": 0.02}  # unchanged form values: no override
    text = workspace.params_text(ROOT / "params.yaml", overrides)
    assert yaml.safe_load(text)["publish"]["min_improvement"] == 0.02


def test_run_params_all_exist_and_default_to_params_yaml(dag) -> None:
    params = load_params(ROOT / "params.yaml")
    for key in params.orchestration.run_params:
        node = params
        for part in key.split("."):
            node = getattr(node, part)
        expected = list(node) if isinstance(node, tuple) else node
        assert json.dumps(dag.params[key]) == json.dumps(expected), key
