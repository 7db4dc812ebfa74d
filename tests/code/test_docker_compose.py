"""docker/compose.yaml and .env.example, checked without a Docker engine.

Every referenced file, env name and service exists; every long-running service has a health
check; the names match the DAG's `orchestration` params; images are pinned; secrets only
come from .env and reach only the services that use them.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.code.test_docker_images import (
    DOCKERFILES,
    ROOT,
    VAR,
    arg_defaults,
    copy_sources,
    dockerfile,
)

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


# --- compose ---------------------------------------------------------------------------------


def test_compose_builds_existing_dockerfiles_and_runs_copied_scripts() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        if "build" in svc:
            context = (COMPOSE.parent / svc["build"]["context"]).resolve()
            dockerfile_path = context / svc["build"]["dockerfile"]
            assert dockerfile_path.is_file(), f"{name}: {dockerfile_path} missing"
            target = svc["build"].get("target")
            if target:
                stages = re.findall(
                    r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile_path.read_text(), re.M | re.I
                )
                assert target in stages, f"{name}: no stage {target} in {dockerfile_path.name}"
        # Scripts a service runs from the image must be files of docker/ the image copies.
        words = [str(w) for w in (svc.get("entrypoint") or []) + (svc.get("command") or [])]
        for word in words:
            if word.startswith("/opt/project/docker/"):
                script = ROOT / word.removeprefix("/opt/project/")
                assert script.is_file(), f"{name}: runs {word}, but {script} does not exist"
                built = svc["build"]["dockerfile"] if "build" in svc else None
                assert built, f"{name}: runs {word} but builds no image"
                copied = " ".join(copy_sources(dockerfile(ROOT / built)))
                assert str(script.relative_to(ROOT)) in copied, f"{built} does not copy {word}"


def test_every_image_is_pinned_to_a_version() -> None:
    refs = [
        (name, svc["image"])
        for name, svc in compose()["services"].items()
        if "image" in svc and "build" not in svc
    ]
    for name, path in DOCKERFILES.items():
        instructions = dockerfile(path)
        args = arg_defaults(instructions)
        for instr, value in instructions:
            if instr == "FROM":
                image = VAR.sub(lambda m, args=args: args[m.group(1)], value.split()[0])
                stages = re.findall(
                    r"\bAS\s+(\S+)", " ".join(a for i, a in instructions if i == "FROM"), re.I
                )
                if image not in stages:
                    refs.append((name, image))
    assert refs
    for where, image in refs:
        _, _, tag = image.rpartition(":")
        assert "/" not in tag and tag and tag != "latest", f"{where}: {image} is not pinned"
        # A release number (16.4) or a dated release (RELEASE.2025-04-22T22-12-26Z).
        assert re.search(r"\d+[.-]\d+", tag), f"{where}: {image}: pin a version, not {tag!r}"


def _one_shot(svc: dict) -> bool:
    return svc.get("restart") == "no"


def test_every_long_running_service_has_a_healthcheck_and_jobs_gate_others() -> None:
    services = compose()["services"]
    waited_for = {
        dep: cond["condition"]
        for svc in services.values()
        for dep, cond in (svc.get("depends_on") or {}).items()
    }
    for name, svc in services.items():
        if _one_shot(svc):
            assert (
                "tools" in svc.get("profiles", [])
                or waited_for.get(name) == "service_completed_successfully"
            ), f"{name}: a one-shot job nobody waits for"
            continue
        test = (svc.get("healthcheck") or {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on undefined service {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health check"
            if cond["condition"] == "service_completed_successfully":
                assert _one_shot(services[dep]), f"{name} waits for {dep} to exit"


def test_airflow3_services_workers_and_gpu_reservation() -> None:
    services = compose()["services"]
    commands = {
        name: " ".join(map(str, svc.get("command") or [])) for name, svc in services.items()
    }
    for cmd in ("api-server", "scheduler", "dag-processor", "triggerer", "celery worker"):
        assert any(c.startswith(cmd) for c in commands.values()), f"no service runs {cmd}"
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:")
    gpu = services["airflow-worker-gpu"]
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    init = " ".join(map(str, services["airflow-init"]["command"]))
    script = (ROOT / init.split()[-1].removeprefix("/opt/project/")).read_text()
    for step in (
        "airflow db migrate",
        "airflow pools set",
        "airflow connections import",
        "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    ):
        assert step in script, f"the init job misses {step}"
    # Logs, the DVC cache and the run workspaces live on volumes every worker shares.
    for name in ("airflow-worker", "airflow-worker-gpu"):
        mounts = services[name]["volumes"]
        assert {
            "airflow-logs:/opt/airflow/logs",
            "dvc-cache:/opt/project/.dvc/cache",
            "workspaces:/opt/project/airflow_home",
        } <= set(mounts), mounts


def test_stack_matches_the_dags_orchestration_params() -> None:
    """Pool, connection, trainer image, cache and workspaces: the names the DAG uses."""
    from tasks.params import load_params

    cfg = load_params(ROOT / "params.yaml").orchestration
    services = compose()["services"]
    init_env = services["airflow-init"]["environment"]
    assert init_env["GPU_POOL"] == f"${{GPU_POOL:-{cfg.gpu_pool}}}", "pool name differs"
    assert init_env["S3_CONN_ID"] == f"${{S3_CONN_ID:-{cfg.aws_conn_id}}}", "connection differs"
    gpu_cmd = services["airflow-worker-gpu"]["command"]
    queue = gpu_cmd[gpu_cmd.index("--queues") + 1]
    assert queue == getattr(cfg, "gpu_queue", "gpu"), "the GPU worker listens elsewhere"
    trainer_repo = VAR.sub("tag", services["trainer"]["image"]).rsplit(":", 1)[0]
    assert trainer_repo == cfg.trainer_image.rsplit(":", 1)[0]
    # Every worker sees the same workspaces, failure records and DVC cache.
    mounted = {m.split(":")[1] for m in services["airflow-worker"]["volumes"]}
    project = Path("/opt/project")
    for path in (cfg.workspace_dir, cfg.failure_dir, cfg.dvc_cache or ".dvc/cache"):
        full = project / path
        assert any(full == Path(m) or Path(m) in full.parents for m in mounted), (
            f"orchestration path {path} is not on a shared volume"
        )


def test_one_bucket_is_the_dvc_remote_and_the_artifact_store() -> None:
    services = compose()["services"]
    bucket = services["minio-init"]["environment"]["S3_BUCKET"]
    for name in ("airflow-worker", "airflow-worker-gpu", "trainer"):
        remote = services[name]["environment"]["DVC_REMOTE_URL"]
        assert remote.startswith(f"s3://{bucket}/"), (name, remote)
    assert services["airflow-worker"]["environment"]["S3_BUCKET"] == bucket


def _strings(node) -> list[str]:
    """Every string in a parsed YAML document (keys included), comments excluded."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(k) + _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def test_env_names_agree_between_compose_and_env_example() -> None:
    example = env_example()
    used = {m.group(1): m.group(2) for value in _strings(compose()) for m in VAR.finditer(value)}
    for name, op in used.items():
        if op in (None, ":?", "?"):
            assert name in example, f"compose requires ${{{name}}}: add it to .env.example"
    referenced = set(used) | {"COMPOSE_PROFILES"}
    stale = set(example) - referenced
    assert not stale, f".env.example sets names compose never reads: {sorted(stale)}"
    profiles = {p for svc in compose()["services"].values() for p in svc.get("profiles", [])}
    assert set(example["COMPOSE_PROFILES"].split(",")) <= profiles
    comment = (ROOT / ".env.example").read_text()
    for profile in profiles:
        assert profile in comment, f".env.example does not explain the {profile} profile"


def test_scripts_get_every_variable_they_require() -> None:
    services = compose()["services"]
    init = (DOCKER / "init-airflow.sh").read_text()
    required = re.search(r"^require ((?:.*\\\n)*.*)$", init, re.M).group(1).split()
    required = [w for w in required if w != "\\"]
    assert "AIRFLOW_ADMIN_PASSWORD" in required
    missing = set(required) - set(services["airflow-init"]["environment"])
    assert not missing, f"airflow-init's environment lacks {missing}"
    reads = set(
        re.findall(r"os\.environ(?:\.get\(|\[)\"(\w+)\"", (DOCKER / "create_bucket.py").read_text())
    )
    assert {"S3_BUCKET", "AWS_ENDPOINT_URL"} <= reads
    missing = reads - set(services["minio-init"]["environment"]) - {"S3_WAIT_ATTEMPTS"}
    assert not missing, f"minio-init's environment lacks {missing}"


def test_compose_holds_no_literal_secrets() -> None:
    """Every password, key or secret is interpolated from .env, never written in the file."""
    secretish = re.compile(r"PASSWORD$|SECRET|FERNET|_KEY(_ID)?$")
    for name, svc in compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            value = str(value)
            if secretish.search(key):
                assert VAR.fullmatch(value), f"{name}: {key} is a literal, not ${{...}}"
            for url_password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value):
                assert VAR.fullmatch(url_password), f"{name}: {key} has a literal password"


def test_env_example_values_are_obvious_placeholders() -> None:
    secretish = re.compile(r"PASSWORD|SECRET|FERNET|ACCESS_KEY")
    for key, value in env_example().items():
        if secretish.search(key):
            assert value.startswith("change-me"), f".env.example: {key}={value!r}"
    init = (DOCKER / "init-airflow.sh").read_text()
    assert "change-me*" in init, "airflow-init must refuse the placeholders"


def test_object_store_keys_reach_only_the_services_that_use_them() -> None:
    services = compose()["services"]
    with_keys = {
        n for n, s in services.items() if "AWS_SECRET_ACCESS_KEY" in (s.get("environment") or {})
    }
    assert with_keys == {
        "minio-init",
        "airflow-init",
        "airflow-worker",
        "airflow-worker-gpu",
        "trainer",
    }, with_keys
    assert set(services["postgres"]["environment"]) == {
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
    }


def test_serving_reads_what_the_workers_publish_and_serves_what_sync_places() -> None:
    """Workers publish into `published`; serving-sync reads it and fills the model base path
    TF Serving watches: the same volumes, and the folder is TF Serving's model name."""
    services = compose()["services"]
    mounts = {
        name: dict(tuple(m.split(":")[:2]) for m in svc.get("volumes", []))
        for name, svc in services.items()
    }
    published = "/opt/project/published"  # params.yaml's relative default, in the image
    for worker in ("airflow-worker", "airflow-worker-gpu"):
        assert mounts[worker].get("published") == published, worker
    sync = [str(w) for w in services["serving-sync"]["command"]]
    assert sync[:3] == ["python", "-m", "tasks.serving"]
    assert sync[sync.index("--destination") + 1] == published
    assert mounts["serving-sync"]["published"] == published
    base = Path(sync[sync.index("sync") + 1])  # <volume mount>/<model name>
    assert mounts["serving-sync"]["serving-models"] == str(base.parent)
    tf_serving = services["serving"]
    assert tf_serving["image"].startswith("tensorflow/serving:")
    assert mounts["serving"]["serving-models"] == "/models"  # the image's MODEL_BASE_PATH
    assert tf_serving["environment"]["MODEL_NAME"] == base.name
    assert services["serving-sync"]["profiles"] == tf_serving["profiles"] == ["serving"]
    assert any(p.endswith(":8501") and p.startswith("127.0.0.1:") for p in tf_serving["ports"])
    dockerfile_text = (ROOT / "docker" / "airflow.Dockerfile").read_text()
    made = re.search(r"^RUN mkdir -p (.+)$", dockerfile_text, re.M).group(1).split()
    assert {"published", "serving"} <= set(made), "volume mount points the user cannot write"
