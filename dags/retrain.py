"""
### ResNet-50 retraining

Runs the project's DVC pipeline (`dvc.yaml`) one task per stage, in the order the last lines
of `dags/retrain.py` write out (a test keeps it equal to DVC's own graph):
configure -> fetch -> prepare -> validate -> backbone -> features -> train_feature_extraction
and train_fine_tune -> evaluate -> visualize -> publish -> push -> cleanup;
beside them `audit` (near-duplicates, label issues, drift) after features, and `export`
(SavedModel, ONNX, LiteRT, parity-checked) after train_fine_tune and before publish, which
uploads the exports with the run.

* **Same stages as `dvc repro`.** `configure` copies the project into this run's workspace
  (under `orchestration.workspace_dir`) with this run's params.yaml; each stage task runs
  `dvc repro --single-item <stage>` there. All workspaces share one DVC cache: a stage whose
  code, params and data did not change is restored, not re-run, and a retry resumes.
* **The unfreezing study is opt-in** (`orchestration.study: true` in params.yaml, read when
  the DAG is parsed; off by default, so a scheduled run never trains its 12 fine-tunings).
  When on: features -> the sweep -> `study` -> visualize, whose report then shows the study.
  The sweep is one mapped task over the items DVC generates from this run's
  `train.sweep.unfreeze` x `train.sweep.augment` (listed by `sweep_items` in the
  `sweep_matrix` group), each named by its item (`unfreeze-1-aug-false`).
* **Triggers.** `orchestration.schedule` and every update of the dataset asset
  (`orchestration.dataset_asset`); unpausing runs nothing until the next scheduled time.
  **Trigger** opens a form of this run's values (defaults from params.yaml; any other key as
  `KEY=VALUE` under "other overrides"); `configure` checks them like params.yaml before
  anything runs.
* **Training** tasks (backbone, features, both train tasks, any sweep item) share the
  `gpu` pool (`orchestration.gpu_pool`, `gpu_pool_slots` slots, 1 by default), so they run
  one after another, not in parallel, until the pool gets more slots. With
  `orchestration.training_executor: kubernetes` they run as GPU pods on the trainer image.
* **Failures.** Every task retries with exponential backoff; a user error (bad params or
  data) fails at once with its one-line message. Each failed try leaves a JSON record in
  `orchestration.failure_dir`; a failed run keeps its workspace.
* **Publishing** (`publish.destination`, credentials from the `orchestration.aws_conn_id`
  connection or the environment) uploads the run with a manifest and moves `champion.json`
  only for a better model; the `publish` task's result says champion, challenger or nothing
  new. Only a **new champion** updates the `<dag_id>_published` asset (through the
  `<dag_id>_new_champion` alias), with the run id, metric and value, the previous champion's
  value, the dataset version and the published report's URI as the event's extra: schedule a
  deploy DAG on that asset. Then `dvc push` (skipped without a DVC remote) and the workspace
  is removed.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import (
    Asset,
    AssetAlias,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    TaskGroup,
    TriggerRule,
    dag,
    get_current_context,
    task,
)

# The helper package sits beside this file; Airflow puts the dags folder on sys.path, a
# DAG bundle or a bare DagBag may not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet_retrain import run_params, workspace  # noqa: E402

from tasks.common import UserError  # noqa: E402
from tasks.paramfile import descriptions  # noqa: E402
from tasks.params import load_params  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
PARAMS = load_params(PROJECT / "params.yaml")  # orchestration settings and the form's defaults
CFG = PARAMS.orchestration
KUBERNETES = CFG.training_executor == "kubernetes"
# the trigger form's typed fields, described by the comments; the sweep's only when the DAG
# has it (else they do nothing)
FORM_KEYS = [k for k in CFG.run_params if CFG.study or not k.startswith("train.sweep.")]
FIELDS = run_params.param_specs(PARAMS, tuple(FORM_KEYS), descriptions(PROJECT / "params.yaml"))
DATASET = Asset(name=f"{CFG.dag_id}_dataset", uri=CFG.dataset_asset)  # new data: a run
PUBLISHED = Asset(  # a new champion: what a downstream "deploy it" DAG schedules on
    name=f"{CFG.dag_id}_published",
    uri=workspace.champion_uri(PROJECT, PARAMS.publish.destination),
)
# publish's outlet: an alias emits nothing unless the task adds an event, which it does only
# for a new champion (a plain Asset outlet fires on every successful publish task)
NEW_CHAMPION = AssetAlias(f"{CFG.dag_id}_new_champion")


def _checked(fn):
    """Run fn; a user error (bad params or data, in this task or its stage) fails the task
    without retries, with its one-line message: logged as is, and raised without the chain of
    frames that led to it (the failure record still finds the cause in __context__)."""
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    try:
        return fn()
    except (workspace.StageFailed, UserError) as e:
        if isinstance(e, workspace.StageFailed) and not e.user_error:
            raise
        logging.getLogger(__name__).error("user error: %s", e)
        raise AirflowFailException(str(e)) from None


def _run() -> dict[str, Any]:
    """This run's context (workspace, run id, params, commit): what `configure` returned.
    Pulled inside each task, so the graph shows the pipeline's edges, not a fan from it."""
    return get_current_context()["ti"].xcom_pull(task_ids="configure")


def _env(run: dict[str, Any]) -> dict[str, str]:
    commit = {"GIT_COMMIT": run["git_commit"]} if run["git_commit"] else {}
    return workspace.aws_env(CFG.aws_conn_id) | commit


@task(
    doc_md="Checks this run's params, copies the project into a fresh workspace that "
    "shares the DVC cache, and writes the run's params.yaml there."
)
def configure() -> dict[str, Any]:
    ctx = get_current_context()
    run_id = workspace.safe_id(ctx["run_id"])
    defaults = {k: spec["default"] for k, spec in FIELDS.items()}
    overrides = run_params.overrides_from(dict(ctx["params"]), defaults)
    overrides["publish.run_id"] = run_id  # not a DVC param of publish: no re-run
    # a relative destination is the project's, not the workspace's (cleanup removes it)
    destination = overrides.get("publish.destination", PARAMS.publish.destination)
    absolute = _checked(lambda: workspace.project_destination(PROJECT, destination))
    if absolute:
        overrides["publish.destination"] = absolute
    text = _checked(lambda: workspace.params_text(PROJECT / "params.yaml", overrides))
    ws = workspace.create(
        project=PROJECT,
        root=workspace.under(PROJECT, CFG.workspace_dir),
        run_id=run_id,
        params_yaml=text,
        cache_dir=workspace.under(PROJECT, CFG.dvc_cache or ".dvc/cache"),
        exclude=[],
    )
    return {
        "workspace": str(ws),
        "run_id": run_id,
        "params_yaml": text,
        "overrides": overrides,
        "git_commit": workspace.git_commit(PROJECT),
    }


@task
def run_stage(stage: str, label: str | None = None) -> dict[str, Any]:
    """`dvc repro` of `stage` in the run's workspace; `label` names a mapped item in the UI."""
    import logging

    run = _run()
    ws = Path(run["workspace"])
    status = _checked(lambda: workspace.run_stage(ws, stage, env=_env(run), pull=KUBERNETES))
    result: dict[str, Any] = {"stage": stage, "status": status}
    if stage == "publish":
        result |= workspace.publish_outcome(ws / PARAMS.publish.record, run["run_id"])
        logging.getLogger(__name__).info("publish: %s", result)
        if extra := workspace.champion_event(result):
            get_current_context()["outlet_events"][NEW_CHAMPION].add(PUBLISHED, extra=extra)
    return result


@task(doc_md="Lists the items DVC generates for a matrix stage with this run's params.")
def matrix_items(stage: str) -> list:
    items = _checked(lambda: workspace.matrix_items(Path(_run()["workspace"]), stage))
    if KUBERNETES:
        from resnet_retrain.kubernetes import pod_arguments

        return [pod_arguments(i["stage"], label=i["label"]) for i in items]
    return items


@task(doc_md="`dvc push` of data and models to the DVC remote (skipped without one).")
def push() -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    run = _run()
    ws = Path(run["workspace"])
    if not CFG.dvc_push or not workspace.has_remote(ws):
        raise AirflowSkipException("no DVC remote configured (`dvc remote add -d`)")
    _checked(lambda: workspace.dvc(ws, ["push", "--run-cache"], env=_env(run), stage="push"))


@task(
    trigger_rule=TriggerRule.NONE_FAILED,
    doc_md="Removes a successful run's workspace (failed runs keep theirs).",
)
def cleanup() -> None:
    import shutil

    if not CFG.keep_workspace:
        shutil.rmtree(_run()["workspace"], ignore_errors=True)


def stage(name: str, *, training: bool = False, matrix: bool = False, **task_kwargs: Any):
    """The task of DVC stage `name`. Training stages take a `gpu` pool slot and the long
    timeout, and run as GPU pods under Kubernetes; a `matrix` stage is mapped over its items."""
    opts: dict[str, Any] = {"task_id": name, **task_kwargs}
    if training:
        opts["pool"] = CFG.gpu_pool
        opts["execution_timeout"] = timedelta(minutes=CFG.train_timeout_min)
        if not KUBERNETES:  # pods get GPUs from Kubernetes; their poller stays on CPU
            opts["queue"] = CFG.gpu_queue  # Celery: the GPU workers' queue
    if matrix:
        return _mapped(name, pod=training and KUBERNETES, **opts)
    if training and KUBERNETES:
        from resnet_retrain.kubernetes import pod_task

        return pod_task(CFG, name, **opts)
    doc = f"DVC stage `{name}`: `dvc repro --single-item {name}` in the run's workspace."
    return run_stage.override(doc_md=doc, **opts)(name)


def _mapped(name: str, *, pod: bool, **opts: Any) -> TaskGroup:
    """One task mapped over the items DVC generates for matrix stage `name` with this run's
    params (listed at run time by `<name>_items`), each labelled by its item in the UI."""
    with TaskGroup(f"{name}_matrix", prefix_group_id=False, tooltip=f"DVC's {name} items") as g:
        items = matrix_items.override(task_id=f"{name}_items")(name)
        if pod:
            from resnet_retrain.kubernetes import LABEL_TEMPLATE, pod_task

            pod_task(CFG, None, map_index_template=LABEL_TEMPLATE, **opts).expand(arguments=items)
        else:
            doc = f"DVC stage `{name}`, one mapped task per item (`dvc stage list {name}`)."
            label = "{{ task.op_kwargs['label'] }}"  # the item's model folder, not 0, 1, ...
            run_stage.override(doc_md=doc, map_index_template=label, **opts).expand_kwargs(items)
    return g


def _form() -> dict[str, Param]:
    form = {
        k: Param(s["default"], description=s["description"], title=k, **s["schema"])
        for k, s in FIELDS.items()
    }
    form[run_params.OVERRIDES] = Param(
        [],
        type="array",
        items={"type": "string", "pattern": run_params.OVERRIDE_PATTERN},
        title="other overrides",
        description="more params.yaml values, KEY=VALUE each, e.g. train.fine_tune.epochs=3",
    )
    return form


def _on_failure(context: dict[str, Any]) -> None:
    workspace.failure_record(context, workspace.under(PROJECT, CFG.failure_dir))


@dag(
    dag_id=CFG.dag_id,
    doc_md=__doc__,
    # No start_date: with one, Airflow schedules the latest missed interval the moment the DAG
    # is unpaused (max(last cron time, start)), and a user's first manual run queues behind
    # that surprise run. Without one, run_immediately=False waits for the next cron time.
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(CFG.schedule, timezone="UTC", run_immediately=False),
        assets=[DATASET],
    )
    if CFG.schedule
    else [DATASET],
    catchup=False,
    max_active_runs=CFG.max_active_runs,
    params=_form(),
    tags=["ml", "resnet50", "dvc", "retraining"],
    render_template_as_native_obj=False,
    default_args={
        "owner": CFG.owner,
        "retries": CFG.retries,
        "retry_delay": timedelta(seconds=CFG.retry_delay_s),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=CFG.max_retry_delay_s),
        "execution_timeout": timedelta(minutes=CFG.stage_timeout_min),
        "on_failure_callback": _on_failure,
        "on_retry_callback": _on_failure,  # a record for every failed try, not just the last
    },
)
def resnet_retrain() -> None:
    fetch, prepare, validate = stage("fetch"), stage("prepare"), stage("validate")
    backbone = stage("backbone", training=True)
    features = stage("features", training=True)
    train_feature_extraction = stage("train_feature_extraction", training=True)
    train_fine_tune = stage("train_fine_tune", training=True)
    evaluate, visualize = stage("evaluate"), stage("visualize")
    publish = stage("publish", outlets=[NEW_CHAMPION])
    audit, export = stage("audit"), stage("export")

    configure() >> fetch >> prepare >> validate >> backbone >> features
    features >> [train_feature_extraction, train_fine_tune] >> evaluate
    evaluate >> visualize >> publish
    if CFG.study:  # the unfreezing sweep, scored; before visualize, so the report shows it
        features >> stage("sweep", training=True, matrix=True) >> stage("study") >> visualize
    features >> audit >> publish  # near-duplicates, label issues, drift: published with the run
    train_fine_tune >> export >> publish  # serving formats, parity-checked, published with the run
    publish >> push() >> cleanup()


retrain = resnet_retrain()
