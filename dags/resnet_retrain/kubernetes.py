"""Training stages as KubernetesPodOperator tasks (`orchestration.training_executor: kubernetes`).

Each pod runs the trainer image (docker/trainer.Dockerfile: the project at the same commit)
on a GPU node and talks to the rest of the run only through the DVC remote, the data plane.
The image's entrypoint first points DVC at the remote and cache from the environment
(DVC_REMOTE_URL, AWS_ENDPOINT_URL, DVC_CACHE_DIR), then runs:

    params.yaml <- this run's params (env RUN_PARAMS_YAML, rendered by the configure task)
    dvc repro --pull <stage>        upstream outputs are restored from the remote run-cache
    dvc push --run-cache <stage>    outputs and the run record go back for the next task

S3 credentials and the remote reach the pod only as environment variables from a Kubernetes
secret (`orchestration.kubernetes_secret`: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL, DVC_REMOTE_URL), never through Airflow or the image. The provider is
imported here, and this module only when that setting is chosen, so parsing stays light.
"""

from __future__ import annotations

from typing import Any

# $1 is the stage name; `set -eu` stops at the first failing step with its exit code.
POD_SCRIPT = """set -eu
printf '%s\\n' "$RUN_PARAMS_YAML" > params.yaml
dvc repro --pull "$1"
dvc push --run-cache "$1"
"""
PARAMS_TEMPLATE = "{{ ti.xcom_pull(task_ids='configure')['params_yaml'] }}"
COMMIT_TEMPLATE = "{{ ti.xcom_pull(task_ids='configure')['git_commit'] or '' }}"


# A mapped pod's name in the UI (map_index_template): its arguments' $0, the item's label.
LABEL_TEMPLATE = "{{ task.arguments[3] }}"


def pod_arguments(stage: str, label: str = "stage") -> list[str]:
    """The container args for `stage`; the image's ENTRYPOINT runs them after DVC setup.
    `label` is the script's $0 (its name in shell errors), the stage its $1."""
    return ["/bin/sh", "-c", POD_SCRIPT, label, stage]


def pod_kwargs(cfg: Any, task_id: str) -> dict[str, Any]:
    """Everything a training pod needs, except its `arguments` (`pod_arguments(stage)`)."""
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    limits = {"memory": cfg.kubernetes_memory}
    tolerations = []
    if cfg.kubernetes_gpus:
        limits[cfg.kubernetes_gpu_resource] = str(cfg.kubernetes_gpus)
        tolerations.append(
            k8s.V1Toleration(
                key=cfg.kubernetes_gpu_resource, operator="Exists", effect="NoSchedule"
            )
        )
    return {
        "task_id": task_id,
        "name": f"{cfg.dag_id}-{task_id}".replace("_", "-").lower(),
        "namespace": cfg.kubernetes_namespace,
        "image": cfg.trainer_image,
        "env_vars": {
            "RUN_PARAMS_YAML": PARAMS_TEMPLATE,
            "GIT_COMMIT": COMMIT_TEMPLATE,
            "TF_CPP_MIN_LOG_LEVEL": "2",
        },
        "secrets": [Secret("env", None, cfg.kubernetes_secret)],  # every key -> env var
        "container_resources": k8s.V1ResourceRequirements(limits=limits),
        "tolerations": tolerations,
        "get_logs": True,
        "on_finish_action": "delete_succeeded_pod",  # failed pods stay for `kubectl logs`
        "labels": {"app": "resnet-retrain", "stage": task_id.replace("_", "-")},
    }


def pod_task(cfg: Any, stage: str | None, *, task_id: str, **task_kwargs: Any):
    """One training pod for `stage`; with stage None, a partial to `.expand(arguments=...)`
    over `pod_arguments(item)` lists."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    kwargs = (
        pod_kwargs(cfg, task_id)
        | task_kwargs
        | {
            "doc_md": f"Training pod for DVC stage `{task_id}` on the trainer image "
            f"`{cfg.trainer_image}`."
        }
    )
    if stage is None:
        return KubernetesPodOperator.partial(**kwargs)
    return KubernetesPodOperator(arguments=pod_arguments(stage), **kwargs)
