"""`make airflow`: Airflow standalone on loopback with this project's DAGs.

    python dags/resnet_retrain/standalone.py [--port 8080] [--home airflow_home]

SQLite and the LocalExecutor in `--home` (default airflow_home/, git-ignored), no example
DAGs, the UI and API on 127.0.0.1 only, sized for this machine (as many executor slots as
cores, one API worker, one DAG parser). DAGs start unpaused: their timetable waits for the
next scheduled time, so nothing runs until that time or a trigger. Creates the `gpu` pool
(orchestration.gpu_pool, orchestration.gpu_pool_slots) and one admin login whose password
is generated once and kept in <home>/passwords.json, then prints where to go and how to log
in. Ctrl-C (or SIGTERM) stops Airflow and every process it started within seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


STOP_GRACE_S = 15  # after SIGTERM, what is still running is killed


def airflow_env(home: Path, port: int, cores: int | None = None) -> dict[str, str]:
    cores = cores or os.cpu_count() or 2
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(max(2, cores)),  # LocalExecutor worker processes
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
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
        f"\n  DAG          {cfg.dag_id}: unpaused, next run at its schedule "
        f"({cfg.schedule}); to run now: Trigger (the play button), change values in the form"
        f"\n  home         {home}  (SQLite, LocalExecutor, {env['AIRFLOW__CORE__PARALLELISM']}"
        " slots; Ctrl-C stops everything)\n",
        flush=True,
    )
    sys.exit(run_until_stopped(["airflow", "standalone"], env))


def run_until_stopped(cmd: list[str], env: dict[str, str]) -> int:
    """Run `cmd` in its own process group; on Ctrl-C or SIGTERM stop the whole group.

    `airflow standalone` alone leaves its scheduler, API server and executor children
    running for about a minute after Ctrl-C; a group signal stops them together.
    """
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        print("\nstopping Airflow ...", flush=True)
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_GRACE_S)
        _signal_group(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
        proc.wait()
        print("stopped", flush=True)
        return 0


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


if __name__ == "__main__":
    main()
