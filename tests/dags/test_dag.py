"""The retraining DAG: loads cleanly, stays light, has DVC's graph without reading
dvc.yaml, maps the sweep over DVC's items, validates run params, and builds the Kubernetes
pod spec for training stages."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

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
HELPERS = ("configure", "push", "cleanup")  # tasks of no DVC stage


@pytest.fixture(scope="module")
def dag():
    import retrain

    return retrain.retrain


@pytest.fixture(scope="module")
def study_dag(tmp_path_factory):
    """The DAG with `orchestration.study: true`: the sweep and the study stage in it."""
    return load_dag(write_project(tmp_path_factory.mktemp("study"), study=True))


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


# Edges of the DAG that DVC's graph has not, each with the reason it is there.
EXTRA_EDGES = {
    ("configure", "fetch"): "configure makes the run's workspace every stage runs in",
    ("publish", "push"): "`dvc push` of everything the run made, after the last stages",
    ("push", "cleanup"): "the workspace goes once its outputs are pushed",
}
STUDY_STAGES = {"sweep", "study"}  # in the DAG only with orchestration.study: true
STUDY_EDGES = {
    ("study", "visualize"): "the report shows the study when it ran (no DVC dep: `make run` "
    "never trains the sweep); in the DAG visualize waits for it, or the report would leave "
    "the study out",
}


def dvc_edges(project: Path) -> set[tuple[str, str]]:
    """(upstream, downstream) stages of DVC's own graph, matrix items folded into their
    stage, without the edges DVC implies through others (A -> B -> C makes A -> C moot)."""
    import networkx as nx
    from dvc.repo import Repo

    def stage(s) -> str:
        return s.name.split("@")[0]

    with Repo(str(project)) as repo:
        graph = repo.index.graph  # an edge points from a stage to a stage it depends on
        folded = nx.DiGraph((stage(b), stage(a)) for a, b in graph.edges)
        folded.add_nodes_from(stage(s) for s in graph.nodes)
    return set(nx.transitive_reduction(folded).edges) | {(n, n) for n in folded.nodes}


def dag_edges(dag) -> set[tuple[str, str]]:
    """(upstream, downstream) tasks of the DAG, a matrix stage's `<stage>_items` task
    folded into the stage it lists the items of."""

    def stage(task_id: str) -> str:
        return task_id.removesuffix("_items")

    edges = {(stage(u), stage(t.task_id)) for t in dag.tasks for u in t.upstream_task_ids}
    return {e for e in edges if e[0] != e[1]} | {
        (stage(t.task_id),) * 2 for t in dag.tasks if t.task_id not in HELPERS
    }


def test_dag_edges_are_dvcs_graph_plus_the_documented_extras(dag, study_dag) -> None:
    # (n, n) pairs stand for the stages themselves: a stage added to dvc.yaml but not to
    # the DAG (or left in the DAG after dvc.yaml dropped it) fails here too
    dvc = dvc_edges(ROOT)
    assert dag_edges(study_dag) == dvc | set(EXTRA_EDGES) | set(STUDY_EDGES)
    # by default the sweep and the study are DVC's alone (`make study`), not the DAG's
    assert dag_edges(dag) == {e for e in dvc if not STUDY_STAGES & set(e)} | set(EXTRA_EDGES)
    # the sweep's items are listed from this run's workspace right before it maps over them
    assert study_dag.get_task("sweep").upstream_task_ids == {"sweep_items"}
    assert study_dag.get_task("sweep_items").upstream_task_ids == {"features"}
    assert study_dag.get_task("study").downstream_task_ids == {"visualize"}


def test_a_scheduled_run_trains_no_sweep_unless_the_study_is_switched_on(dag) -> None:
    assert load_params(ROOT / "params.yaml").orchestration.study is False
    tasks = {t.task_id for t in dag.tasks}
    assert not {"sweep", "sweep_items", "study"} & tasks
    assert {"train_feature_extraction", "train_fine_tune", "evaluate"} <= tasks
    # and the form has no sweep field that would do nothing
    assert not [k for k in dag.params if k.startswith("train.sweep.")]


def test_the_graph_shows_the_pipeline_not_a_fan_from_configure(study_dag) -> None:
    # every task reaches the run's workspace through XCom inside its body: configure's
    # only edge is the pipeline's first
    assert study_dag.get_task("configure").downstream_task_ids == {"fetch"}
    assert set(study_dag.task_group_dict) == {"sweep_matrix"}  # the sweep and its item list


def test_the_dag_file_does_not_read_dvc_yaml(dag, tmp_path: Path) -> None:
    # the dags folder and params.yaml alone, as a DAG processor without the project sees them
    shutil.copytree(DAGS, tmp_path / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    code = textwrap.dedent(f"""
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(tmp_path / "dags")!r})
        dag = bag.dags.get("resnet_retrain")
        print(bag.import_errors or sorted(t.task_id for t in dag.tasks))
    """)
    assert last_line_of(code) == str(sorted(t.task_id for t in dag.tasks))


def test_every_task_retries_with_backoff_and_records_failures(dag) -> None:
    for t in dag.tasks:
        assert t.retries >= 1 and t.retry_exponential_backoff >= 2, t.task_id
        assert t.on_failure_callback and t.on_retry_callback, t.task_id
        assert t.execution_timeout is not None, t.task_id


def test_training_stages_share_the_gpu_pool_with_the_long_timeout(study_dag) -> None:
    dag = study_dag
    cfg = load_params(ROOT / "params.yaml").orchestration
    training = {"backbone", "features", "train_feature_extraction", "train_fine_tune", "sweep"}
    for t in dag.tasks:
        if t.task_id in training:
            assert (t.pool, t.queue) == (cfg.gpu_pool, cfg.gpu_queue), t.task_id
            assert t.execution_timeout == timedelta(minutes=cfg.train_timeout_min), t.task_id
        else:
            assert t.pool != cfg.gpu_pool, t.task_id
            assert t.execution_timeout == timedelta(minutes=cfg.stage_timeout_min), t.task_id
    assert {t.task_id for t in dag.tasks if t.outlets} == {"publish"}
    assert dag.get_task("cleanup").trigger_rule == "none_failed"


def test_sweep_items_come_from_dvc_with_this_runs_params_and_name_the_mapped_tasks(
    study_dag, tmp_path: Path
) -> None:
    from jinja2 import Template
    from resnet_retrain import workspace

    # a run's workspace whose params change the sweep: DVC generates its items from them
    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc/config").write_text("[core]\n    no_scm = true\n")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["sweep"]["unfreeze"] = [2, 40]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    items = workspace.matrix_items(tmp_path, "sweep")
    assert items == [
        {"stage": "sweep@2-False", "label": "unfreeze-2-aug-false"},
        {"stage": "sweep@2-True", "label": "unfreeze-2-aug-true"},
        {"stage": "sweep@40-False", "label": "unfreeze-40-aug-false"},
        {"stage": "sweep@40-True", "label": "unfreeze-40-aug-true"},
    ]
    sweep = study_dag.get_task("sweep")
    assert type(sweep).__name__.endswith("MappedOperator")  # one task, expanded per item
    # the UI names each mapped task by its item (the model folder it trains), not 0, 1, ...
    label = Template(sweep.map_index_template).render(task=SimpleNamespace(op_kwargs=items[2]))
    assert label == "unfreeze-40-aug-false"


def write_project(tmp: Path, **orchestration) -> Path:
    """dags/ and params.yaml (these orchestration settings) in tmp: a DAG file of its own."""
    shutil.copytree(DAGS, tmp / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["orchestration"] |= orchestration
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp


def load_dag(project: Path):
    """The DAG of `project`'s DAG file (its params.yaml), imported under a name of its own."""
    path = project / "dags" / "retrain.py"
    spec = importlib.util.spec_from_file_location(f"retrain_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        while str(path.parent) in sys.path:  # the DAG file puts its folder there
            sys.path.remove(str(path.parent))
    return module.retrain


def test_kubernetes_executor_runs_training_as_gpu_pods(tmp_path: Path) -> None:
    from jinja2 import Template
    from resnet_retrain.kubernetes import pod_arguments

    dag = load_dag(
        write_project(
            tmp_path,
            training_executor="kubernetes",
            trainer_image="reg.local/trainer:1.2",
            kubernetes_secret="s3-creds",
            kubernetes_gpus=2,
            study=True,
        )
    )
    pod_task = dag.get_task("train_fine_tune")
    assert type(pod_task).__name__ == "KubernetesPodOperator"
    assert pod_task.pool == "gpu"
    assert dag.get_task("evaluate").__class__.__name__ != "KubernetesPodOperator"
    sweep = dag.get_task("sweep")
    assert sweep.operator_class.__name__ == "KubernetesPodOperator"
    assert sweep.upstream_task_ids == {"sweep_items"}
    args = pod_arguments("sweep@1-False", label="unfreeze-1-aug-false")  # what sweep_items maps
    assert args[-1] == "sweep@1-False"
    assert Template(sweep.map_index_template).render(task=SimpleNamespace(arguments=args)) == (
        "unfreeze-1-aug-false"
    )

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


def test_run_params_all_exist_and_default_to_params_yaml(study_dag) -> None:
    dag = study_dag  # every run_params key is a field (the sweep's too)
    params = load_params(ROOT / "params.yaml")
    for key in params.orchestration.run_params:
        node = params
        for part in key.split("."):
            node = getattr(node, part)
        expected = list(node) if isinstance(node, tuple) else node
        assert json.dumps(dag.params[key]) == json.dumps(expected), key


def test_unpausing_the_dag_schedules_nothing_before_the_next_cron_time(dag) -> None:
    """No surprise run of the missed interval ahead of a user's first manual run."""
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction
    from airflow.utils import timezone

    scheduled = DagSerialization.from_dict(DagSerialization.to_dict(dag))  # as the scheduler has it
    info = scheduled.timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=scheduled.start_date, latest=None, catchup=False),
    )
    assert info is not None and info.run_after > timezone.utcnow()
