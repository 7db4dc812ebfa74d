"""DAG tests import the DAG file the way Airflow does: with dags/ on sys.path and a private,
empty AIRFLOW_HOME (no examples, SQLite in tmp), so nothing touches the project's own."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

_home = tempfile.mkdtemp(prefix="airflow-home-")
os.environ.setdefault("AIRFLOW_HOME", _home)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
if str(DAGS) not in sys.path:
    sys.path.insert(0, str(DAGS))
