# syntax=docker/dockerfile:1
# The GPU training image: one pipeline stage per container, for KubernetesPodOperator (the
# DAG with `orchestration.training_executor: kubernetes`) or `docker compose run trainer`.
#
#   docker build -f docker/trainer.Dockerfile -t resnet-retrain/trainer .
#   docker run --gpus all --env-file .env resnet-retrain/trainer repro train_fine_tune
#
# TensorFlow 2.21 with its CUDA 12 / cuDNN 9 libraries comes from uv.lock (the `gpu` group:
# `tensorflow[and-cuda]`, TensorFlow's own documented GPU install), installed by the
# Makefile's own line (`uv sync --frozen --no-default-groups`: no Airflow, no test tools; same
# uv, same Python). So the
# image trains with exactly the TensorFlow, Keras and numpy that `make test` tested; the host
# needs only the NVIDIA driver and the NVIDIA Container Toolkit. (A tensorflow/tensorflow
# -gpu base would bring a second, unlocked TensorFlow and CUDA next to the locked ones.)

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE}

ARG UV_VERSION=0.13.9
ENV UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    PROJECT_DIR=/opt/project \
    PYTHONUNBUFFERED=1

# Same uid/gid as the Airflow image (50000:0), so both can share the DVC cache volume.
RUN useradd --uid 50000 --gid 0 --create-home --shell /bin/bash trainer \
    && install -d -o trainer -g 0 -m 775 /opt/project /opt/tools \
    && python3.11 -m venv /opt/tools \
    && /opt/tools/bin/pip install --quiet --disable-pip-version-check "uv==${UV_VERSION}"

USER trainer
WORKDIR /opt/project

# Dependencies first (rebuilt only when the lock changes), then the code.
COPY --chown=trainer:0 pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/home/trainer/.cache/uv,uid=50000,gid=0 \
    /opt/tools/bin/uv sync --frozen --python python3.11 --inexact --no-default-groups --group gpu \
        --no-install-project

COPY --chown=trainer:0 tasks/ tasks/
COPY --chown=trainer:0 expectations/ expectations/
COPY --chown=trainer:0 params.yaml dvc.yaml dvc.lock .dvcignore ./
# Mount point of the shared DVC cache volume, made by this user so the volume starts owned
# by it (and .dvc/ stays writable for config.local).
RUN mkdir -p .dvc/cache
COPY --chown=trainer:0 .dvc/config .dvc/config
COPY --chown=trainer:0 --chmod=0755 docker/entrypoint.sh docker/
RUN --mount=type=cache,target=/home/trainer/.cache/uv,uid=50000,gid=0 \
    /opt/tools/bin/uv sync --frozen --python python3.11 --inexact --no-default-groups --group gpu

ENV VIRTUAL_ENV=/opt/project/.venv \
    PATH=/opt/project/.venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    MPLBACKEND=Agg \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# The locked TensorFlow imports (no GPU at build time; `gpu-check` below verifies one at run).
RUN python -c "import tensorflow as tf, keras, tasks; print('tensorflow', tf.__version__, \
'keras', keras.__version__)"

# `repro STAGE` pulls the stage's inputs from the DVC remote, runs it, pushes its outputs;
# any other command runs as given, e.g. `python -m tasks.evaluate` or the GPU check:
#   docker run --gpus all resnet-retrain/trainer python -c \
#     "import tensorflow as tf; assert tf.config.list_physical_devices('GPU'), 'no GPU'"
ENTRYPOINT ["/opt/project/docker/entrypoint.sh"]
CMD ["python", "-c", "import tensorflow as tf; gpus = tf.config.list_physical_devices('GPU'); print('GPUs:', gpus); raise SystemExit(0 if gpus else 1)"]
