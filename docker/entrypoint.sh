#!/usr/bin/env bash
# Entrypoint of both images: point DVC at the shared remote and cache, then run the command.
#
#   entrypoint.sh repro STAGE [STAGE...]   pull what STAGE needs from the DVC remote, run it
#                                          (`dvc repro --single-item`), push its outputs and
#                                          run record (`dvc push --run-cache`)
#   entrypoint.sh COMMAND [ARGS...]        anything else, e.g. `/entrypoint api-server` (the
#                                          official Airflow entrypoint) or `python -m tasks.x`
#
# Configuration comes from the environment only (docker/compose.yaml, a Kubernetes secret),
# and lands in .dvc/config.local, which git and the image never carry. Credentials are never
# written: DVC's S3 client reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY itself.
#
#   DVC_REMOTE_URL    s3://bucket/prefix of the default remote "store"; unset = no remote
#   AWS_ENDPOINT_URL  S3-compatible endpoint (MinIO); unset = AWS S3
#   DVC_CACHE_DIR     shared cache folder (a volume); unset = .dvc/cache
#   DVC_PUSH          0 = do not push after `repro` (default 1 when a remote is set)
set -euo pipefail

PROJECT_DIR="${PROJECT_DIR:-/opt/project}"

configure_dvc() {
  cd "$PROJECT_DIR"
  [[ -d .dvc ]] || return 0
  local remote="${DVC_REMOTE_URL:-}" endpoint="${AWS_ENDPOINT_URL:-}" cache="${DVC_CACHE_DIR:-}"
  if [[ -n "$remote" && "$remote" != s3://?* ]]; then
    echo "entrypoint: DVC_REMOTE_URL must be s3://bucket/prefix, got '$remote'" >&2
    exit 2
  fi
  for value in "$remote" "$endpoint" "$cache"; do
    # configobj would read a comma as a list and a '#' as a comment.
    if [[ "$value" =~ [,#\"\'[:space:]] ]]; then
      echo "entrypoint: '$value' has a character DVC's config cannot hold (, # quotes spaces)" >&2
      exit 2
    fi
  done
  [[ -z "$cache" ]] || mkdir -p "$cache"
  # One write of the container's own config (git and the image never carry config.local);
  # `dvc config --list` shows the result. Images carry no .git, hence no_scm.
  {
    echo "[core]"
    [[ -d .git ]] || echo "    no_scm = true"
    [[ -z "$remote" ]] || echo "    remote = store"
    if [[ -n "$remote" ]]; then
      echo "['remote \"store\"']"
      echo "    url = $remote"
      [[ -z "$endpoint" ]] || echo "    endpointurl = $endpoint"
    fi
    if [[ -n "$cache" ]]; then
      # Several containers (same uid, group 0) share it: keep new files group-writable.
      echo "[cache]"
      echo "    dir = $cache"
      echo "    shared = group"
    fi
  } > .dvc/config.local.tmp
  mv .dvc/config.local.tmp .dvc/config.local
}

repro() {
  if [[ $# -eq 0 ]]; then
    echo "entrypoint: usage: repro STAGE [STAGE...] (stages of dvc.yaml)" >&2
    exit 2
  fi
  if [[ -n "${DVC_REMOTE_URL:-}" ]]; then
    dvc repro --pull --single-item "$@"
    if [[ "${DVC_PUSH:-1}" != "0" ]]; then
      # Outputs and the run record: a later `dvc repro --pull` restores instead of re-running.
      dvc push --run-cache "$@"
    fi
  else
    dvc repro --single-item "$@"
  fi
}

configure_dvc
if [[ "${1:-}" == "repro" ]]; then
  shift
  repro "$@"
elif [[ $# -gt 0 ]]; then
  exec "$@"
fi
