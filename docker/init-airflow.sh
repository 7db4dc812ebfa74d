#!/usr/bin/env bash
# One-shot init job of the compose stack (service airflow-init); safe to run again.
#
#   1. migrate the metadata database
#   2. the admin login (Airflow 3's simple auth manager: user list from
#      AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS, passwords from the file it names)
#   3. the pool the training tasks run in (GPU_POOL, GPU_POOL_SLOTS = GPUs available)
#   4. the S3 connection the DAG uses (S3_CONN_ID), pointing at MinIO or AWS
#
# Every value comes from the environment (.env via compose); nothing secret is echoed or
# passed on a command line.
set -euo pipefail

require() {
  local missing=()
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || missing+=("$name")
  done
  if ((${#missing[@]})); then
    echo "airflow-init: set ${missing[*]} (copy .env.example to .env and fill it in)" >&2
    exit 2
  fi
}

require AIRFLOW_ADMIN_USERNAME AIRFLOW_ADMIN_PASSWORD \
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE AIRFLOW__CORE__FERNET_KEY \
        AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY POSTGRES_PASSWORD \
        GPU_POOL GPU_POOL_SLOTS S3_CONN_ID AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
for name in AIRFLOW_ADMIN_PASSWORD AIRFLOW__CORE__FERNET_KEY AIRFLOW__API_AUTH__JWT_SECRET \
            AIRFLOW__API__SECRET_KEY POSTGRES_PASSWORD AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
  if [[ "${!name:-}" == change-me* ]]; then
    echo "airflow-init: $name still holds the placeholder from .env.example; replace it in" \
         ".env (docs/deploy.md shows how to generate one)" >&2
    exit 2
  fi
done
if ! python -c 'import os; from cryptography.fernet import Fernet
Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"])' 2>/dev/null; then
  echo "airflow-init: AIRFLOW__CORE__FERNET_KEY is not a Fernet key; make one with" \
       "python -c \"from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())\"" >&2
  exit 2
fi
if ! [[ "$GPU_POOL_SLOTS" =~ ^[1-9][0-9]*$ ]]; then
  echo "airflow-init: GPU_POOL_SLOTS must be a whole number >= 1, got '$GPU_POOL_SLOTS'" >&2
  exit 2
fi

echo "airflow-init: migrating the metadata database"
airflow db migrate

echo "airflow-init: admin login '$AIRFLOW_ADMIN_USERNAME'"
umask 077
python - <<'EOF'
import json, os, pathlib

path = pathlib.Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
path.parent.mkdir(parents=True, exist_ok=True)
users = json.loads(path.read_text() or "{}") if path.is_file() else {}
users[os.environ["AIRFLOW_ADMIN_USERNAME"]] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
tmp = path.with_suffix(".tmp")
tmp.write_text(json.dumps(users) + "\n")
tmp.replace(path)
EOF

echo "airflow-init: pool '$GPU_POOL' with $GPU_POOL_SLOTS slot(s)"
airflow pools set "$GPU_POOL" "$GPU_POOL_SLOTS" \
  "Training tasks; one slot per GPU (GPU_POOL_SLOTS in .env)" >/dev/null

echo "airflow-init: connection '$S3_CONN_ID' -> ${AWS_ENDPOINT_URL:-AWS S3}"
conn_file="$(mktemp --suffix=.json)"
trap 'rm -f "$conn_file"' EXIT
CONN_FILE="$conn_file" python - <<'EOF'
import json, os

extra = {"region_name": os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
if os.environ.get("AWS_ENDPOINT_URL"):  # MinIO or another S3-compatible store
    extra["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
conn = {"conn_type": "aws", "login": os.environ["AWS_ACCESS_KEY_ID"],
        "password": os.environ["AWS_SECRET_ACCESS_KEY"], "extra": extra,
        "description": "Object storage of the pipeline (DVC remote and published runs)"}
with open(os.environ["CONN_FILE"], "w") as f:
    json.dump({os.environ["S3_CONN_ID"]: conn}, f)
EOF
airflow connections import --overwrite "$conn_file" >/dev/null

echo "airflow-init: done"
