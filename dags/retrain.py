"""
### ResNet-50 retraining

Runs the project's DVC pipeline (`dvc.yaml`) stage by stage, one task per stage:
fetch -> prepare -> validate -> backbone -> features -> train (feature extraction and fine
tuning in parallel, the unfreezing sweep mapped over its values) -> evaluate -> visualize ->
publish, then `dvc push`.

* **Same stages as `dvc repro`.** Each task runs `dvc repro --single-item <stage>` in this
  run's workspace (a copy of the project under `orchestration.workspace_dir`). All workspaces
  share one DVC cache: a stage whose code, params and data did not change is restored, not
  re-run, so a scheduled run with nothing new retrains nothing and a retry resumes.
* **Triggers.** `orchestration.schedule` and every update of the dataset asset
  (`orchestration.dataset_asset`). Trigger with changed values from the form below; values
  are checked like params.yaml before anything runs.
* **Training** tasks use the `gpu` pool (or run as GPU pods with
  `orchestration.training_executor: kubernetes`). Every task retries with exponential
  backoff; a user error (bad params or data) fails at once with its one-line message. Each
  failed try leaves a JSON record in `orchestration.failure_dir`.
* **Publishing** (`publish.destination`, credentials from the `orchestration.aws_conn_id`
  connection or the environment) uploads the run with a manifest and moves `champion.json`
  only for a better model; the `publish` task's result says champion or challenger.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    TriggerRule,
    dag,
    get_current_context,
    task,
)

# The helper package sits beside this file; Airflow puts the dags folder on sys.path, a
# DAG bundle or a bare DagBag may not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet_retrain import pipeline, run_params, workspace  # noqa: E402

from tasks.common import UserError  # noqa: E402
from tasks.params import Params, ParamsError, build  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]


def build_dag(params: Params, project: Path = PROJECT) -> DAG:
    """The retraining DAG for these params (tests build variants, e.g. Kubernetes)."""
    cfg = params.orchestration
    groups = pipeline.read_groups(project / "dvc.yaml", params.to_dict())
    models = params.train.models_dir
    upstream = pipeline.upstream(
        groups, reads={"evaluate": tuple(f"{models}/{m}" for m in params.evaluate.models)}
    )
    specs = run_params.param_specs(params, cfg.run_params)
    defaults = {k: s["default"] for k, s in specs.items()}
    form = {
        k: Param(s["default"], description=s["description"], title=k, **s["schema"])
        for k, s in specs.items()
    }
    form[run_params.OVERRIDES] = Param(
        [],
        type="array",
        items={"type": "string", "pattern": run_params.OVERRIDE_PATTERN},
        title="other overrides",
        description="more params.yaml values, KEY=VALUE each, e.g. train.fine_tune.epochs=3",
    )
    root = _under(project, cfg.workspace_dir)
    failures = _under(project, cfg.failure_dir)
    cache = _under(project, cfg.dvc_cache or ".dvc/cache")
    dataset = Asset(name=f"{cfg.dag_id}_dataset", uri=cfg.dataset_asset)
    published = Asset(
        name=f"{cfg.dag_id}_published", uri=_asset_uri(project, params.publish.destination)
    )
    kubernetes = cfg.training_executor == "kubernetes"

    def on_failure(context: dict[str, Any]) -> None:
        workspace.failure_record(context, failures)

    @dag(
        dag_id=cfg.dag_id,
        doc_md=__doc__,
        start_date=datetime(2026, 1, 1),
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(cfg.schedule, timezone="UTC"), assets=[dataset]
        )
        if cfg.schedule
        else [dataset],
        catchup=False,
        max_active_runs=cfg.max_active_runs,
        params=form,
        tags=["ml", "resnet50", "dvc", "retraining"],
        render_template_as_native_obj=False,
        default_args={
            "owner": cfg.owner,
            "retries": cfg.retries,
            "retry_delay": timedelta(seconds=cfg.retry_delay_s),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": timedelta(seconds=cfg.max_retry_delay_s),
            "execution_timeout": timedelta(minutes=cfg.stage_timeout_min),
            "on_failure_callback": on_failure,
            "on_retry_callback": on_failure,  # a record for every failed try, not just the last
        },
    )
    def retrain() -> None:
        @task(
            doc_md="Checks this run's params, copies the project into a fresh workspace "
            "that shares the DVC cache, and writes the run's params.yaml there."
        )
        def configure() -> dict[str, Any]:
            ctx = get_current_context()
            run_id = workspace.safe_id(ctx["run_id"])
            overrides = run_params.overrides_from(dict(ctx["params"]), defaults)
            overrides["publish.run_id"] = run_id  # not a DVC param of publish: no re-run
            # a relative destination is the project's, not the workspace's (cleanup removes it)
            destination = overrides.get("publish.destination", params.publish.destination)
            absolute = _checked(lambda: workspace.project_destination(project, destination))
            if absolute:
                overrides["publish.destination"] = absolute
            text = _checked(lambda: workspace.params_text(project / "params.yaml", overrides))
            outs = [project / o for g in groups.values() for o in g.outs]
            ws = workspace.create(
                project=project,
                root=root,
                run_id=run_id,
                params_yaml=text,
                cache_dir=cache,
                exclude=outs,
            )
            return {
                "workspace": str(ws),
                "run_id": run_id,
                "params_yaml": text,
                "overrides": {k: v for k, v in overrides.items()},
                "git_commit": _git_commit(project),
            }

        def stage_env(run: dict[str, Any]) -> dict[str, str]:
            env = workspace.aws_env(cfg.aws_conn_id)
            return env | ({"GIT_COMMIT": run["git_commit"]} if run["git_commit"] else {})

        @task(doc_md="Runs one DVC stage in the run's workspace (`dvc repro --single-item`).")
        def run_stage(run: dict[str, Any], stage: str) -> dict[str, Any]:
            status = _checked(
                lambda: workspace.run_stage(
                    Path(run["workspace"]), stage, env=stage_env(run), pull=kubernetes
                )
            )
            result: dict[str, Any] = {"stage": stage, "status": status}
            if stage == "publish":
                result |= _publish_outcome(Path(run["workspace"]), params, run["run_id"])
            return result

        @task(
            doc_md="Lists the stages DVC generates for a matrix group with this run's "
            "params (the sweep values), for dynamic task mapping."
        )
        def list_items(run: dict[str, Any], group: str) -> list:
            items = _checked(lambda: workspace.matrix_items(Path(run["workspace"]), group))
            if kubernetes and pipeline.is_training(group, cfg.training_stages):
                from resnet_retrain.kubernetes import pod_arguments

                return [pod_arguments(s) for s in items]
            return items

        @task(doc_md="`dvc push` of data and models to the DVC remote (skipped without one).")
        def push(run: dict[str, Any]) -> None:
            from airflow.sdk.exceptions import AirflowSkipException

            ws = Path(run["workspace"])
            if not cfg.dvc_push or not workspace.has_remote(ws):
                raise AirflowSkipException("no DVC remote configured (`dvc remote add -d`)")
            _checked(
                lambda: workspace.dvc(ws, ["push", "--run-cache"], env=stage_env(run), stage="push")
            )

        @task(
            trigger_rule=TriggerRule.NONE_FAILED,
            doc_md="Removes a successful run's workspace (failed runs keep theirs).",
        )
        def cleanup(run: dict[str, Any]) -> None:
            import shutil

            if not cfg.keep_workspace:
                shutil.rmtree(run["workspace"], ignore_errors=True)

        run = configure()
        ops: dict[str, Any] = {}
        for g in groups.values():
            training = pipeline.is_training(g.name, cfg.training_stages)
            extra: dict[str, Any] = {"task_id": g.name, "doc_md": _stage_doc(g)}
            if training:
                extra |= {
                    "pool": cfg.gpu_pool,
                    "execution_timeout": timedelta(minutes=cfg.train_timeout_min),
                }
                if not kubernetes:  # pods get GPUs from Kubernetes; their poller stays on CPU
                    extra["queue"] = cfg.gpu_queue  # Celery: the GPU workers' queue
            if g.name == "publish":
                extra["outlets"] = [published]
            if training and kubernetes:
                from resnet_retrain.kubernetes import pod_task

                pod = pod_task(
                    cfg,
                    None if g.mapped else g.name,
                    **{k: v for k, v in extra.items() if k != "doc_md"},
                )
                if g.mapped:
                    items = list_items.override(task_id=f"{g.name}_items")(run, g.name)
                    pod = pod.expand(arguments=items)
                run >> pod
                ops[g.name] = pod
            elif g.mapped:
                items = list_items.override(task_id=f"{g.name}_items")(run, g.name)
                ops[g.name] = run_stage.override(**extra).partial(run=run).expand(stage=items)
            else:
                ops[g.name] = run_stage.override(**extra)(run, g.name)
        for name, ups in upstream.items():
            for up in ups:
                ops[up] >> ops[name]

        leaves = [ops[n] for n in groups if not any(n in u for u in upstream.values())]
        leaves >> push(run) >> cleanup(run)

    return retrain()


def _checked(fn):
    """Run fn; a stage's user error fails the task without retries, with its message."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return fn()
    except workspace.StageFailed as e:
        if e.user_error:
            raise AirflowFailException(str(e)) from e
        raise
    except UserError as e:
        raise AirflowFailException(str(e)) from e


def _publish_outcome(ws: Path, params: Params, run_id: str) -> dict[str, Any]:
    """What publish did for this run: champion, challenger, or nothing new to publish."""
    import json
    import logging

    record = json.loads((ws / params.publish.record).read_text())
    if record.get("run_id") != run_id:  # restored from the run-cache: nothing changed
        outcome = {
            "published": False,
            "reason": f"nothing changed since run {record.get('run_id')}; nothing new to publish",
        }
    else:
        outcome = {
            "published": True,
            **{
                k: record.get(k)
                for k in ("status", "reason", "uri", "metric", "value", "champion_value")
            },
        }
    logging.getLogger(__name__).info("publish: %s", outcome)
    return outcome


def _stage_doc(g: pipeline.Group) -> str:
    items = " (one mapped task per matrix item)" if g.mapped else ""
    return f"DVC stage `{g.name}`{items}: `{g.cmd}`.\n\n{g.desc}".strip()


def _git_commit(project: Path) -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=project,
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _under(project: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else project / p


def _asset_uri(project: Path, destination: str) -> str:
    if "://" in destination:
        return destination.rstrip("/") + "/champion.json"
    return (_under(project, destination) / "champion.json").as_uri()


def read_params(path: Path) -> Params:
    """params.yaml, checked exactly like `tasks.params.load_params` (but parsed by libyaml)."""
    try:
        return build(Params, pipeline.load_yaml(path), "")
    except ParamsError as e:
        raise UserError(f"{path}: {e}") from None


retrain = build_dag(read_params(PROJECT / "params.yaml"))
