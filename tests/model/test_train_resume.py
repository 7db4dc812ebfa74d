"""Killing a training process mid-run and re-running the same command continues from the
last finished epoch (not from epoch 0), and no half output ever appears."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

from tasks.model import build_backbone
from tests.model.train_helpers import make_project

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 5


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_epoch(tmp_path):
    keras.utils.set_random_seed(0)
    build_backbone(None).save_weights(tmp_path / "base.weights.h5")
    # augmentation on: the head trains through the frozen base, a few seconds per epoch
    root = make_project(
        tmp_path / "p",
        tmp_path / "base.weights.h5",
        n=(16, 6, 6),
        train={
            "epochs": EPOCHS,
            "patience": 50,
            "reduce_lr_patience": 50,
            "augment": {"enabled": True},
        },
    )
    cmd = [
        sys.executable,
        "-m",
        "tasks.train",
        "--params",
        str(root / "params.yaml"),
        "--set",
        "train.strategy=feature_extraction",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    state = root / "checkpoints" / "feature_extraction" / "head" / "state.json"
    out = root / "models" / "feature_extraction"

    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 900
        while not (state.is_file() and json.loads(state.read_text())["epoch"] >= 2):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "training never reached epoch 2"
            time.sleep(0.5)
        proc.kill()  # SIGKILL: no cleanup handler runs
        proc.wait()
    before = json.loads(state.read_text())
    done = before["epoch"]
    assert 2 <= done < EPOCHS and not before.get("done")
    assert not out.exists()  # a killed run leaves no output behind

    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    text = second.stdout + second.stderr
    assert second.returncode == 0, text[-3000:]
    assert f"resuming after epoch {done}" in text
    assert f"Epoch {done + 1}/{EPOCHS}" in text
    assert f"Epoch 1/{EPOCHS}" not in text  # nothing before the checkpoint was redone

    history = json.loads((out / "history.json").read_text())["phases"][0]["epochs"]
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    assert history[:done] == before["rows"]  # the epochs from the killed run are kept
    assert not state.parent.exists()  # resume state removed once the output is written
