"""docker/ scripts run here, outside a container, on real inputs.

The images' entrypoint (DVC remote and cache from the environment, `repro STAGE` moving data
through the remote), the compose init job (against a SQLite metadata DB instead of Postgres)
and the bucket job (against the loopback moto S3 server).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent  # the project's venv: dvc, airflow, python


def project_copy(dest: Path) -> Path:
    """What an image holds of the repo (its COPY lines): code, pipeline, DVC config; no data."""
    dest.mkdir(parents=True)
    for name in ("tasks", "dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / ".dvc").mkdir()
    shutil.copy2(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    return dest


def run_script(
    script: str, *args: str, env: dict[str, str], timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_", "AIRFLOW", "S3_"))
    }
    base["PATH"] = f"{BIN}{os.pathsep}{base['PATH']}"
    return subprocess.run(
        ["bash", str(DOCKER / script), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def dvc_config(project: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(BIN / "dvc"), "config", "--list", "--local"],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


# --- entrypoint.sh ---------------------------------------------------------------------------


def test_entrypoint_points_dvc_at_the_remote_and_shared_cache(tmp_path: Path) -> None:
    project = project_copy(tmp_path / "project")
    env = {
        "PROJECT_DIR": str(project),
        "DVC_REMOTE_URL": "s3://pipeline/dvc",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "DVC_CACHE_DIR": str(tmp_path / "cache"),
        "AWS_ACCESS_KEY_ID": "placeholder-id",
        "AWS_SECRET_ACCESS_KEY": "placeholder-key",
    }
    done = run_script("entrypoint.sh", "sh", "-c", "pwd; echo ran", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(project), "ran"]  # the command ran in the project
    config = dvc_config(project)
    assert config == {
        "core.no_scm": "true",
        "core.remote": "store",
        "remote.store.url": "s3://pipeline/dvc",
        "remote.store.endpointurl": "http://minio:9000",
        "cache.dir": str(tmp_path / "cache"),
        "cache.shared": "group",
    }
    # Credentials stay in the environment; nothing secret lands on disk.
    local = (project / ".dvc" / "config.local").read_text()
    assert "placeholder-key" not in local and "placeholder-id" not in local
    # Without a remote or endpoint (a laptop run), the container's config says so.
    done = run_script("entrypoint.sh", "true", env={"PROJECT_DIR": str(project)})
    assert done.returncode == 0, done.stderr
    assert dvc_config(project) == {"core.no_scm": "true"}


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DVC_REMOTE_URL": "http://minio:9000/bucket"}, "DVC_REMOTE_URL must be s3://"),
        ({"DVC_REMOTE_URL": "s3://a,b/dvc"}, "cannot hold"),
        ({}, "usage: repro STAGE"),
    ],
)
def test_entrypoint_refuses_bad_settings_with_one_line(tmp_path: Path, env, message) -> None:
    project = project_copy(tmp_path / "project")
    args = ("repro",) if not env else ("true",)
    done = run_script("entrypoint.sh", *args, env={"PROJECT_DIR": str(project), **env})
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_stage_data_moves_between_containers_only_through_the_remote(
    tmp_path: Path, s3_server
) -> None:
    """Fresh 'pods' share nothing but the bucket: each pulls what the ones before pushed.

    Pods 1-2 use the images' `repro STAGE`; pod 3 runs the DAG's Kubernetes pod command
    (dags/resnet_retrain/kubernetes.py) through the trainer image's entrypoint.
    """
    s3_server.client().create_bucket(Bucket="pipeline")
    env = {
        "DVC_REMOTE_URL": "s3://pipeline/dvc",
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    first = project_copy(tmp_path / "pod1")
    done = run_script("entrypoint.sh", "repro", "fetch", env={"PROJECT_DIR": str(first), **env})
    assert done.returncode == 0, done.stderr[-2000:]
    second = project_copy(tmp_path / "pod2")
    done = run_script("entrypoint.sh", "repro", "prepare", env={"PROJECT_DIR": str(second), **env})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (second / "data" / "raw").is_dir(), "the second pod did not pull fetch's output"
    assert (second / "data" / "prepared" / "train" / "images.npy").is_file()
    # prepare's outputs were pushed: the remote holds the folder its new dvc.lock names.
    lock = yaml.safe_load((second / "dvc.lock").read_text())
    md5 = lock["stages"]["prepare"]["outs"][0]["md5"]  # "<32 hex>.dir"
    s3_server.client().head_object(Bucket="pipeline", Key=f"dvc/files/md5/{md5[:2]}/{md5[2:]}")

    sys.path.insert(0, str(ROOT / "dags"))
    try:
        from resnet_retrain.kubernetes import POD_SCRIPT
    finally:
        sys.path.remove(str(ROOT / "dags"))
    third = project_copy(tmp_path / "pod3")
    pod_env = {"PROJECT_DIR": str(third), "RUN_PARAMS_YAML": (ROOT / "params.yaml").read_text()}
    done = run_script(
        "entrypoint.sh", "/bin/sh", "-c", POD_SCRIPT, "stage", "prepare", env={**pod_env, **env}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # The run record pod 2 pushed lets pod 3 restore prepare's outputs instead of re-running.
    assert "'prepare' is cached" in done.stdout + done.stderr
    assert (third / "data" / "prepared" / "classes.json").read_text() == (
        second / "data" / "prepared" / "classes.json"
    ).read_text()


# --- init-airflow.sh -------------------------------------------------------------------------


def init_env(home: Path, **overrides: str) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": "test-only-jwt",
        "AIRFLOW__API__SECRET_KEY": "t",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "ops:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "auth" / "pw.json"),
        "AIRFLOW_ADMIN_USERNAME": "ops",
        "AIRFLOW_ADMIN_PASSWORD": "test-only-login",
        "POSTGRES_PASSWORD": "unused-here",
        "GPU_POOL": "gpu",
        "GPU_POOL_SLOTS": "2",
        "S3_CONN_ID": "pipeline_s3",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    return {**env, **overrides}


@pytest.mark.parametrize(
    "override, message",
    [
        ({"AIRFLOW_ADMIN_PASSWORD": "change-me-admin-password"}, "AIRFLOW_ADMIN_PASSWORD still"),
        ({"AIRFLOW__CORE__FERNET_KEY": "not-a-key"}, "is not a Fernet key"),
        ({"GPU_POOL_SLOTS": "0"}, "GPU_POOL_SLOTS must be"),
        ({"S3_CONN_ID": ""}, "set S3_CONN_ID"),
    ],
)
def test_init_refuses_placeholders_and_bad_values_before_touching_the_db(
    tmp_path: Path, override, message
) -> None:
    done = run_script("init-airflow.sh", env=init_env(tmp_path, **override))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "airflow.db").exists()


@pytest.mark.slow
def test_init_creates_db_admin_login_gpu_pool_and_s3_connection(tmp_path: Path) -> None:
    env = init_env(tmp_path)
    for attempt in range(2):  # the job must be safe to run again (restarts, upgrades)
        done = run_script("init-airflow.sh", env=env, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, f"run {attempt + 1}: {done.stderr[-3000:]}"
    assert "test-only-login" not in done.stdout + done.stderr  # never echoed
    check = r"""
import json
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.models import Connection, Pool
from airflow.utils.session import create_session

SimpleAuthManager().init()  # what the API server does at start: must keep our password
with create_session() as s:
    pool = s.query(Pool).filter(Pool.pool == "gpu").one()
    conn = s.query(Connection).filter(Connection.conn_id == "pipeline_s3").one()
    print(json.dumps({"passwords": SimpleAuthManager.get_passwords(), "slots": pool.slots,
                      "type": conn.conn_type, "login": conn.login, "password": conn.password,
                      "extra": conn.extra_dejson, "encrypted": conn.is_encrypted}))
"""
    out = subprocess.run(
        [sys.executable, "-c", check],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["passwords"] == {"ops": "test-only-login"}
    assert got["slots"] == 2
    assert got["type"] == "aws" and got["login"] == "testing" and got["password"] == "testing"
    assert got["extra"] == {"region_name": "eu-west-1", "endpoint_url": "http://minio:9000"}
    assert got["encrypted"], "the connection must be stored encrypted (Fernet key)"
    pw_file = tmp_path / "auth" / "pw.json"
    assert oct(pw_file.stat().st_mode & 0o777) == "0o600"


# --- create_bucket.py ------------------------------------------------------------------------


def run_bucket_job(env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
    return subprocess.run(
        [sys.executable, str(DOCKER / "create_bucket.py")],
        env={**base, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bucket_job_creates_once_then_finds_it(s3_server) -> None:
    env = {
        "S3_BUCKET": "pipeline",
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3_VERSIONING": "true",
    }
    first, second = run_bucket_job(env), run_bucket_job(env)
    assert first.returncode == 0, first.stderr
    assert "bucket pipeline: created, versioning on" in first.stderr
    assert second.returncode == 0 and "already there" in second.stderr
    client = s3_server.client()
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["pipeline"]
    assert client.get_bucket_versioning(Bucket="pipeline")["Status"] == "Enabled"


def test_bucket_job_names_what_to_fix(s3_server) -> None:
    env = {
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    done = run_bucket_job({**env, "S3_BUCKET": "Bad_Name"})
    assert done.returncode == 2 and "S3_BUCKET='Bad_Name' is not a valid bucket" in done.stderr
    done = run_bucket_job({"S3_BUCKET": "pipeline", "AWS_ENDPOINT_URL": s3_server.endpoint_url})
    assert done.returncode == 2 and "AWS_ACCESS_KEY_ID" in done.stderr
    s3_server.stop()  # the store is down: a bounded wait, then one clear line
    done = run_bucket_job({**env, "S3_BUCKET": "pipeline", "S3_WAIT_ATTEMPTS": "2"})
    assert done.returncode == 2 and "did not answer after 2 attempts" in done.stderr
    assert "Traceback" not in done.stderr
