"""`dvc repro` on a clean checkout works, and a second run re-runs nothing below fetch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def clean_checkout(dest: Path) -> Path:
    """The project's files as a fresh clone would have them (no data, no .venv)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


@pytest.mark.slow
def test_repro_on_a_clean_checkout_then_nothing_changes(tmp_path):
    work = clean_checkout(tmp_path / "repo")
    first = dvc(work, "repro", "prepare")
    assert "Running stage 'prepare'" in first
    assert (work / "data/prepared/train/images.npy").is_file()
    lock = (work / "dvc.lock").read_text()
    second = dvc(work, "repro", "prepare")
    assert "Running stage 'prepare'" not in second
    assert "didn't change, skipping" in second
    assert (work / "dvc.lock").read_text() == lock  # fetch re-ran, but hashed the same
