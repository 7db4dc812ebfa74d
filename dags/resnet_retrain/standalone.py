"""`make airflow`: Airflow standalone on loopback with this project's DAGs.

    python dags/resnet_retrain/standalone.py [--port 8080] [--home airflow_home]

SQLite and the LocalExecutor in `--home` (default airflow_home/, git-ignored), no example
DAGs, the UI and API on 127.0.0.1 only. Creates the `gpu` pool (orchestration.gpu_pool,
orchestration.gpu_pool_slots) and one admin login whose password is generated once and
kept in <home>/passwords.json, then prints where to go and how to log in.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def airflow_env(home: Path, port: int) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def password(home: Path) -> str:
    """The admin password: generated once, kept (0600) beside the database."""
    path = home / "passwords.json"
    if not path.is_file():
        path.write_text(json.dumps({"admin": secrets.token_urlsafe(12)}))
        path.chmod(0o600)
    return json.loads(path.read_text())["admin"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--home", type=Path, default=PROJECT / "airflow_home")
    args = parser.parse_args()
    sys.path.insert(0, str(PROJECT))
    from tasks.params import load_params

    cfg = load_params(PROJECT / "params.yaml").orchestration
    home = args.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **airflow_env(home, args.port)}
    secret = password(home)

    def airflow(*cmd: str) -> None:
        subprocess.run(["airflow", *cmd], env=env, check=True, stdout=subprocess.DEVNULL)

    airflow("db", "migrate")
    airflow(
        "pools",
        "set",
        cfg.gpu_pool,
        str(cfg.gpu_pool_slots),
        "training tasks of the retraining DAG (orchestration.gpu_pool_slots)",
    )
    print(
        f"\n  Airflow UI   http://127.0.0.1:{args.port}\n  login        admin / {secret}"
        f"\n  DAG          {cfg.dag_id} (trigger it with changed params from the UI form)"
        f"\n  home         {home}  (SQLite, LocalExecutor; Ctrl-C stops everything)\n",
        flush=True,
    )
    os.execvpe("airflow", ["airflow", "standalone"], env)


if __name__ == "__main__":
    main()
