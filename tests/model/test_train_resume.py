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
from tests.model.train_helpers import live_log, make_project

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
    # DVCLive's log goes on from the killed run's: every epoch once, none restarted
    assert live_log(out / "dvclive", "eval/loss") == [
        (i, r["val_loss"]) for i, r in enumerate(history)
    ]
    assert not state.parent.exists()  # resume state removed once the output is written


def test_phase_stops_at_the_target_val_accuracy_and_stays_stopped(tmp_path):
    import numpy as np

    from tasks import training

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)  # one feature decides: learnt within an epoch or two

    def phase(target):
        keras.utils.set_random_seed(0)
        ds = training.array_dataset(x, y, num_classes=2, batch_size=16, shuffle=True)
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
        training.compile_model(model, optimizer="adam", learning_rate=0.1)
        return training.fit_phase(
            model,
            ds,
            ds,
            name="p",
            epochs=8,
            state_dir=tmp_path / str(target),
            fingerprint="f",
            patience=8,
            reduce_lr_patience=8,
            reduce_lr_factor=0.5,
            min_lr=1e-6,
            target_val_accuracy=target,
        )

    assert len(phase(None)) == 8  # no target: every epoch
    rows = phase(0.9)
    # stopped right after the first epoch at the target, well before the last
    assert len(rows) < 8 and rows[-1]["val_accuracy"] >= 0.9
    assert all(r["val_accuracy"] < 0.9 for r in rows[:-1])
    state = json.loads((tmp_path / "0.9" / "p" / "state.json").read_text())
    state.pop("done")  # as if killed after the stopping epoch was saved
    (tmp_path / "0.9" / "p" / "state.json").write_text(json.dumps(state))
    assert len(phase(0.9)) == len(rows)  # the re-run does not train on


def test_dvclive_log_follows_the_resume_state(tmp_path):
    from tasks.training import open_live

    rows = [
        {
            "epoch": i + 1,
            "loss": 1 / (i + 1),
            "accuracy": 0.5,
            "val_loss": 2 / (i + 1),
            "val_accuracy": 0.25 * i,
            "lr": 0.001,
        }
        for i in range(3)
    ]

    def logged() -> list[tuple[int, float]]:
        return live_log(tmp_path, "eval/loss")

    open_live(tmp_path, rows=rows[:2])
    assert logged() == [(0, 2.0), (1, 1.0)]
    # killed after the state committed epoch 3, before DVCLive wrote it: caught up, once
    live = open_live(tmp_path, rows=rows)
    assert live.step == 3 and open_live(tmp_path, rows=rows).step == 3
    assert logged() == [(i, r["val_loss"]) for i, r in enumerate(rows)]
    assert live_log(tmp_path, "train/learning_rate") == [(0, 0.001), (1, 0.001), (2, 0.001)]
    # a log ahead of the state (the state was discarded: another configuration) starts over
    open_live(tmp_path, rows=rows[:1])
    assert logged() == [(0, 2.0)]
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 0
