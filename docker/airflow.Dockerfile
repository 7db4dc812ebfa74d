# syntax=docker/dockerfile:1
# The Airflow image: the official Apache Airflow image plus this project, its DAGs and its
# locked dependencies. Build from the repo root (compose does):
#
#   docker build -f docker/airflow.Dockerfile -t resnet-retrain/airflow .
#   docker build -f docker/airflow.Dockerfile --target airflow-gpu -t resnet-retrain/airflow-gpu .
#
# Dependencies come from uv.lock through the Makefile's own install line (`uv sync --frozen
# --no-default-groups`, same uv version, same Python), plus the `deploy` group (Airflow through
# the `airflow` group it includes, Celery, Redis,
# Postgres drivers). So the image runs exactly the versions `make test` tested, and
# tests/code/test_docker_images.py fails if the two ever drift. The official image's own
# Airflow stays unused: the project's venv comes first on PATH and holds the locked Airflow
# (the tag below must name the same version, which the test also checks).

ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11

FROM ${AIRFLOW_IMAGE} AS airflow

# The Makefile's uv: same version, bootstrapped the same way (pip into a private venv).
ARG UV_VERSION=0.13.9
ENV UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    PROJECT_DIR=/opt/project
USER root
RUN install -d -o airflow -g 0 -m 775 /opt/project \
    && install -d -o airflow -g 0 -m 700 /opt/airflow/auth
USER airflow
# PIP_USER=false: the official image sets PIP_USER=true, which pip refuses inside a venv.
RUN python3.11 -m venv /opt/airflow/.tools \
    && PIP_USER=false /opt/airflow/.tools/bin/pip install --quiet --disable-pip-version-check \
        "uv==${UV_VERSION}"

WORKDIR /opt/project

# Dependencies first (this layer is rebuilt only when the lock changes), then the code.
COPY --chown=airflow:0 pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/home/airflow/.cache/uv,uid=50000,gid=0 \
    /opt/airflow/.tools/bin/uv sync --frozen --python python3.11 --inexact --no-default-groups --group deploy \
        --no-install-project

COPY --chown=airflow:0 tasks/ tasks/
COPY --chown=airflow:0 dags/ dags/
COPY --chown=airflow:0 expectations/ expectations/
COPY --chown=airflow:0 params.yaml dvc.yaml dvc.lock .dvcignore ./
# Mount points of the shared DVC cache, the DAG's run workspaces, the published runs and the
# served models (compose volumes), made by this user so the volumes start owned by it (and
# .dvc/ stays writable for config.local).
RUN mkdir -p .dvc/cache airflow_home published serving
COPY --chown=airflow:0 .dvc/config .dvc/config
COPY --chown=airflow:0 --chmod=0755 docker/entrypoint.sh docker/init-airflow.sh docker/create_bucket.py \
     docker/
RUN --mount=type=cache,target=/home/airflow/.cache/uv,uid=50000,gid=0 \
    /opt/airflow/.tools/bin/uv sync --frozen --python python3.11 --inexact --no-default-groups --group deploy

# The locked environment first on PATH: `airflow`, `dvc` and `python -m tasks.<stage>` all
# resolve to it. DAGs are read straight from the project, where `tasks` is importable.
ENV VIRTUAL_ENV=/opt/project/.venv \
    PATH=/opt/project/.venv/bin:$PATH \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/project/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLBACKEND=Agg

# Fail the build, not the first task, if the venv is not the one Airflow runs from.
RUN python -c "import airflow, tasks, sys; assert sys.prefix == '/opt/project/.venv', sys.prefix" \
    && airflow version

# Still the official non-root user (uid 50000, gid 0). The entrypoint configures the DVC
# remote and cache from the environment, then hands over to the official entrypoint.
USER airflow
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/opt/project/docker/entrypoint.sh", "/entrypoint"]
CMD []


# The GPU Celery worker: the same image plus TensorFlow's CUDA/cuDNN wheels from the same
# lock (the `gpu` group). Only the NVIDIA driver is needed on the host.
FROM airflow AS airflow-gpu
RUN --mount=type=cache,target=/home/airflow/.cache/uv,uid=50000,gid=0 \
    /opt/airflow/.tools/bin/uv sync --frozen --python python3.11 --inexact --no-default-groups --group deploy \
        --group gpu
ENV TF_FORCE_GPU_ALLOW_GROWTH=true \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
