"""Run identity, shared by the report and the published manifest: run id, git commit,
dataset version. Light (no TensorFlow): the report, publish and the DAG all name runs alike.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from tasks.common import file_digest
from tasks.layout import REPORT_RUN


def new_run_id(commit: str | None) -> str:
    """UTC time + short git commit: `20260102T030405Z-1a2b3c4d`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{commit[:8]}" if commit else stamp


def recorded_run_id(figures_dir: Path) -> str | None:
    """The run id the visualize stage gave the report (<visualize.out_dir>/run.json)."""
    path = Path(figures_dir) / REPORT_RUN
    if not path.is_file():
        return None
    given = json.loads(path.read_text()).get("run_id")
    return given if isinstance(given, str) and given else None


def git_commit(env_fallback: str | None) -> str | None:
    """HEAD of the project (with "-dirty" if files changed), else the given fallback."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return f"{head}-dirty" if dirty else head
    except (OSError, subprocess.SubprocessError):
        return env_fallback


def dataset_version(prepared_dir: Path, lock: Path = Path("dvc.lock")) -> str:
    """DVC's hash of the prepared data (from dvc.lock), else a sha256 of its files."""
    import yaml

    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for out in stage.get("outs", []):
                if Path(out.get("path", "")) == prepared_dir and out.get("md5"):
                    return f"md5:{out['md5']}"
    digest = [
        f"{p.relative_to(prepared_dir).as_posix()}={file_digest(p)}"
        for p in sorted(prepared_dir.rglob("*"))
        if p.is_file()
    ]
    return "sha256:" + hashlib.sha256("\n".join(digest).encode()).hexdigest()
