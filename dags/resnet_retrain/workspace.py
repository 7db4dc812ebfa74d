"""Per-run workspaces and the one way a task runs a stage: `dvc repro` in the workspace.

    <orchestration.workspace_dir>/<run id>/   a copy of the project's code, dvc.yaml, dvc.lock
                                              and params.yaml (+ this run's overrides);
                                              .dvc/config.local points at the shared cache

Every workspace shares one DVC cache (and its run-cache), so a stage whose code, params and
deps did not change is restored from the cache instead of re-run: a no-change scheduled run
retrains nothing, and a retried task resumes where the run stopped. Runs never see each
other's files. Called from task bodies only (nothing here runs at DAG-parse time).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

EXIT_USER_ERROR = 2  # tasks.common.run_main: bad params/data; retrying cannot help
SKIP_DIRS = {".git", ".venv", ".tools", "__pycache__", ".pytest_cache", ".ruff_cache"}
_EXITED = re.compile(r"exited with (-?\d+)")
# What TensorFlow prints while probing for CUDA on a machine without a GPU, before its own
# log level applies (TF_CPP_MIN_LOG_LEVEL cannot hide it): noise in a CPU worker's task log.
_GPU_PROBE = re.compile(
    r"cudart_stub\.cc|cuda_platform\.cc.*cuInit|Could not find cuda drivers|"
    r"All log messages before absl::InitializeLog\(\) is called"
)


def has_gpu_device() -> bool:
    """An NVIDIA device node on this worker (checked without importing TensorFlow)."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def gpu_probe_noise(line: str) -> bool:
    return bool(_GPU_PROBE.search(line))


class StageFailed(RuntimeError):
    def __init__(self, stage: str, code: int | None, message: str) -> None:
        self.stage, self.code = stage, code
        super().__init__(message)

    @property
    def user_error(self) -> bool:
        return self.code == EXIT_USER_ERROR


def safe_id(run_id: str) -> str:
    """An Airflow run id as a path and publish.run_id: `manual__2026-01-02T03:04:05+00:00`
    -> `manual__2026-01-02T03-04-05+00-00`."""
    return re.sub(r"[^A-Za-z0-9._+-]", "-", run_id).lstrip(".-") or "run"


def source_files(project: Path, exclude: list[Path]) -> list[Path]:
    """The project's code and config: git's tracked + untracked-not-ignored files, or, without
    git, every file outside the usual tool folders, DVC's stage outputs and `exclude`."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=project,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        files = [Path(p) for p in out.decode().split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        files = [p.relative_to(project) for p in project.rglob("*") if p.is_file()]
        exclude = [*exclude, *stage_outputs(project)]  # git ignores them; rglob does not
    skip = [e.resolve() for e in exclude]
    return [
        f
        for f in files
        if not SKIP_DIRS & set(f.parts)
        and f.parts[:2] != (".dvc", "cache")
        and f.parts[:2] != (".dvc", "tmp")
        and (project / f).is_file()
        and not any((project / f).resolve().is_relative_to(s) for s in skip)
    ]


def params_text(project_params: Path, overrides: dict[str, Any]) -> str:
    """params.yaml with this run's dotted overrides applied, checked like `dvc repro` would."""
    from tasks.paramfile import read_raw, with_overrides  # light: yaml + pydantic
    from tasks.params import load_params

    load_params(project_params, overrides)  # UserError naming the key on a bad value
    return yaml.safe_dump(with_overrides(read_raw(project_params), overrides), sort_keys=False)


def project_destination(project: Path, destination: str) -> str | None:
    """`publish.destination` as the project's own place, for a run in a workspace.

    Under `dvc repro` a relative destination (the default `published`) lies in the project;
    a stage in a workspace would resolve it inside the workspace, which `cleanup` deletes
    with the run's champion. Returns the absolute path to use instead, or None when the
    destination already names one place (s3://, file:///abs, an absolute path).
    """
    if "://" in destination:
        if destination.startswith("file://") and not destination.startswith("file:///"):
            from tasks.common import UserError

            raise UserError(
                f"publish.destination = {destination!r}: a file:// URL needs an absolute "
                "path (file:///srv/models), or give a folder relative to the project"
            )
        return None
    path = Path(destination).expanduser()
    return None if path.is_absolute() else str((project / path).resolve())


def under(project: Path, path: str) -> Path:
    """An orchestration path setting: absolute as given, else inside the project."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project / p


def champion_uri(project: Path, destination: str) -> str:
    """The URI of `champion.json` at `publish.destination` (the DAG's `published` Asset)."""
    if "://" in destination:
        return destination.rstrip("/") + "/champion.json"
    return (under(project, destination) / "champion.json").as_uri()


def git_commit(project: Path) -> str | None:
    """The project's HEAD commit, recorded in the run's manifest (None outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=project,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip() or None


def create(
    *,
    project: Path,
    root: Path,
    run_id: str,
    params_yaml: str,
    cache_dir: Path,
    exclude: list[Path],
) -> Path:
    """Copy the project into `root/<run_id>/` (idempotent: a retry refreshes the code)."""
    ws = root / run_id
    files = source_files(project, exclude=[root, *exclude])
    for rel in files:
        dest = ws / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, dest)
    if (project / ".dvc/config.local").is_file():  # remote credentials stay local
        shutil.copy2(project / ".dvc/config.local", ws / ".dvc/config.local")
    (ws / "params.yaml").write_text(params_yaml)
    dvc(ws, ["config", "--local", "cache.dir", str(cache_dir.resolve())])
    dvc(ws, ["config", "--local", "core.no_scm", "true"])  # the workspace is no git repo
    log.info("workspace %s: %d files from %s, cache %s", ws, len(files), project, cache_dir)
    return ws


def dvc(
    ws: Path, args: list[str], *, env: dict[str, str] | None = None, stage: str = "dvc"
) -> list[str]:
    """Run `dvc <args>` in `ws`, streaming its output to the task log; returns the last lines.

    A stage that exits 2 (`UserError`) raises StageFailed(user_error=True) with the stage's
    own one-line message, so the DAG fails the task without retrying it.
    """
    cmd = [sys.executable, "-m", "dvc", *args]
    full_env = {**os.environ, **(env or {})}
    bin_dir = str(Path(sys.executable).parent)  # `python -m tasks.x` = this environment
    full_env["PATH"] = bin_dir + os.pathsep + full_env.get("PATH", "")
    log.info("$ cd %s && dvc %s", ws, " ".join(args))
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(
        cmd,
        cwd=ws,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    quiet = gpu_probe_noise if not has_gpu_device() else (lambda _line: False)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if quiet(line):
                continue
            log.info("%s", line.rstrip())
            tail.append(line.rstrip())
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # the task was killed (timeout): take the stage down too
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if rc:
        codes = [int(m.group(1)) for line in tail for m in _EXITED.finditer(line)]
        errors = [line for line in tail if line.startswith("error: ")]
        reason = (
            errors[-1].removeprefix("error: ")
            if errors
            else next((x for x in reversed(tail) if x.strip()), f"exit {rc}")
        )
        raise StageFailed(stage, codes[-1] if codes else None, f"{stage}: {reason}")
    return list(tail)


def run_stage(ws: Path, stage: str, *, env: dict[str, str], pull: bool = False) -> str:
    """`dvc repro` one stage in the workspace: "ran", or "restored" from the run-cache, or
    "unchanged". `pull` (Kubernetes mode): fetch what is missing from the DVC remote."""
    args = (
        ["--wait-for-lock", "repro", "--pull", stage]
        if pull
        else ["--wait-for-lock", "repro", "--single-item", stage]
    )
    tail = dvc(ws, args, env=env, stage=stage)
    text = "\n".join(tail)
    if "is cached - skipping run" in text:
        return "restored"
    if "didn't change, skipping" in text and "Running stage" not in text:
        return "unchanged"
    return "ran"


def matrix_items(ws: Path, group: str) -> list[dict[str, str]]:
    """DVC's generated stages of a matrix/foreach group for this run's params, each with a
    label for the UI (`{"stage": "sweep@1-False", "label": "unfreeze-1-aug-false"}`)."""
    tail = dvc(ws, ["stage", "list", group], stage=f"{group} items")
    items = []
    for line in tail:
        name, _, description = line.strip().partition(" ")
        if name.startswith(f"{group}@"):
            items.append({"stage": name, "label": _item_label(name, description.strip())})
    if not items:
        raise StageFailed(group, EXIT_USER_ERROR, f"{group}: the matrix has no items")
    return items


def _item_label(name: str, description: str) -> str:
    """The folder of the item's first output as `dvc stage list` describes it (`Outputs
    models/sweep/unfreeze-1-aug-false` -> `unfreeze-1-aug-false`), else its item part."""
    first = description.removeprefix("Outputs ").split(",")[0].rstrip("/")
    if description.startswith("Outputs ") and first and not first.endswith("\u2026"):
        return first.rsplit("/", 1)[-1]
    return name.partition("@")[2]


def stage_outputs(project: Path) -> list[Path]:
    """Every stage output DVC knows of in `project` (a workspace copies code, not outputs)."""
    from dvc.repo import Repo  # heavy: only ever called inside a task

    with Repo(str(project), config={"core": {"no_scm": True}}) as repo:  # git or not
        return [Path(out.fs_path) for s in repo.index.stages for out in s.outs]


def publish_outcome(record_path: Path, run_id: str) -> dict[str, Any]:
    """What the publish stage did for this run (its record): champion, challenger, or
    nothing new (the record is an earlier run's, restored from the run-cache)."""
    import json

    record = json.loads(record_path.read_text())
    if record.get("run_id") != run_id:
        return {
            "published": False,
            "reason": f"nothing changed since run {record.get('run_id')}; nothing new to publish",
        }
    keys = (
        "status",
        "promoted",
        "reason",
        "uri",
        "report",
        "metric",
        "value",
        "champion_value",
        "dataset_version",
        "drifted",
    )
    outcome = {"published": True, "run_id": run_id, **{k: record.get(k) for k in keys}}
    return outcome | {"data": data_note(record)}


def data_note(record: dict[str, Any]) -> str:
    """What the audit said about this run's data against the champion's, in one line."""
    if record.get("drifted") is None:
        return "drift not checked (no reference data: audit.reference_features)"
    if record["drifted"]:
        classes = ", ".join(record.get("drifted_classes") or []) or "no single class"
        return f"retrained on drifted data (most shifted classes: {classes})"
    return "no drift against the champion's data"


def champion_event(outcome: dict[str, Any]) -> dict[str, Any] | None:
    """The `published` asset event's extra when publish promoted a new champion, else None
    (a challenger, a run that held the title already, or nothing new published)."""
    if not (outcome.get("published") and outcome.get("promoted")):
        return None
    keys = (
        "run_id",
        "metric",
        "value",
        "champion_value",
        "dataset_version",
        "report",
        "uri",
        "drifted",
    )
    return {k: outcome.get(k) for k in keys}


def has_remote(ws: Path) -> bool:
    tail = dvc(ws, ["remote", "list"], stage="remote list")
    return any(line.strip() for line in tail)


def aws_env(conn_id: str | None) -> dict[str, str]:
    """AWS_* variables for a stage from the Airflow connection `conn_id`, resolved by the
    amazon provider's AwsBaseHook (keys, session token, profile or assumed role; region and
    endpoint_url from its extra); {} when there is none, so the worker's environment is used."""
    if not conn_id:
        return {}
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook  # boto3: not at parse

    hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
    config = hook.conn_config
    if config.conn_id != conn_id:  # not defined: the provider fell back to an empty one
        log.info("no Airflow connection %r; S3 credentials from the environment", conn_id)
        return {}
    session = hook.get_session()
    found = session.get_credentials()  # None: nothing anywhere; the stage names what to set
    creds = found.get_frozen_credentials() if found else None
    pairs = {
        "AWS_ACCESS_KEY_ID": creds and creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds and creds.secret_key,
        "AWS_SESSION_TOKEN": creds and creds.token,
        "AWS_ENDPOINT_URL": config.endpoint_url,
        "AWS_DEFAULT_REGION": config.region_name or session.region_name,
    }
    return {k: str(v) for k, v in pairs.items() if v}


def failure_record(context: dict[str, Any], failure_dir: Path) -> Path:
    """Write `<failure_dir>/<dag>/<run>/<task>[.<map>].try<N>.json` for a failed task try."""
    from tasks.common import UserError, atomic_write_json

    ti = context["ti"]
    exc = context.get("exception")
    # the stage's or task's own error: raised as is, or behind AirflowFailException (whose
    # `from None` leaves it in __context__)
    cause = (
        exc
        if isinstance(exc, StageFailed | UserError)
        else getattr(exc, "__cause__", None) or getattr(exc, "__context__", None)
    )
    stage_error = cause if isinstance(cause, StageFailed) else None
    user_error = isinstance(cause, UserError) or bool(stage_error and stage_error.user_error)
    map_index = getattr(ti, "map_index", -1)
    name = ti.task_id + (f".{map_index}" if map_index not in (None, -1) else "")
    path = failure_dir / ti.dag_id / safe_id(ti.run_id) / f"{name}.try{ti.try_number}.json"
    atomic_write_json(
        path,
        {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "map_index": map_index,
            "try_number": ti.try_number,
            "failed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "error": f"{type(exc).__name__}: {exc}" if exc else None,
            "user_error": user_error,
            "stage": stage_error.stage if stage_error else None,
            "exit_code": stage_error.code if stage_error else None,
            "hint": "a user error (bad params or data), not retried: fix it and trigger a new run"
            if user_error
            else "retried with backoff while orchestration.retries last; see the log",
        },
    )
    log.error("failure record: %s", path)
    return path
