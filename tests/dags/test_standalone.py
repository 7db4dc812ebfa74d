"""`make airflow` for real: Airflow standalone from dags/resnet_retrain/standalone.py on a
free loopback port in a temp home, sized for the machine, and gone entirely after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from resnet_retrain.standalone import airflow_env

from tests.conftest import free_port
from tests.dags.conftest import DAGS

pytestmark = pytest.mark.slow


def processes_of(home: Path) -> list[int]:
    """Pids of live processes started with AIRFLOW_HOME=home (zombies excluded)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"AIRFLOW_HOME={home}".encode() in env and state != "Z":
            pids.append(int(proc.name))
    return pids


def test_local_airflow_is_sized_for_the_machine_and_starts_dags_unpaused(tmp_path: Path) -> None:
    env = airflow_env(tmp_path, 8080, cores=2)
    assert env["AIRFLOW__CORE__PARALLELISM"] == "2"  # not Airflow's 32 on a 2-core machine
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"


def test_make_airflow_serves_on_loopback_and_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    port, home = free_port(), tmp_path / "home"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(DAGS / "resnet_retrain/standalone.py"),
            "--port",
            str(port),
            "--home",
            str(home),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5
                ) as r:
                    health = json.loads(r.read())
                if health.get("scheduler", {}).get("status") == "healthy":
                    break
            except OSError:
                pass
            assert proc.poll() is None, "standalone exited early"
            time.sleep(2)
        else:
            pytest.fail("Airflow did not become healthy within 300 s")
        assert processes_of(home), "no Airflow process found"

        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
        out, _ = proc.communicate(timeout=60)
        lines = out.splitlines()
        assert proc.returncode == 0
        assert any("login        admin / " in x for x in lines), out[-2000:]
        assert any("unpaused" in x for x in lines), out[-2000:]
        assert "stopped" in lines, out[-2000:]
        time.sleep(1)
        assert processes_of(home) == [], "Airflow processes left after Ctrl-C"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in processes_of(home):
            os.kill(pid, signal.SIGKILL)
