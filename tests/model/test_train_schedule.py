"""Phase 2's warm-up + cosine learning rate: what each step trains at, and that a resumed
phase goes on at the rate it stopped at."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tasks.training import WarmupCosine, compile_model, fit_phase


def test_rate_warms_up_then_decays_to_the_floor():
    s = WarmupCosine(1e-3, epochs=4, warmup_epochs=1, steps=10, floor=1e-6)
    rates = [s.rate(t) for t in range(40)]
    assert rates[0] < rates[5] < rates[9]  # linear rise over the first epoch
    assert math.isclose(max(rates), 1e-3, rel_tol=1e-9) and rates.index(max(rates)) == 10
    assert all(np.diff(rates[10:]) <= 0)  # then never rises again
    assert rates[-1] < 1e-5  # the last step is near the floor
    # no warm-up: the first step trains at the peak
    assert WarmupCosine(1e-3, epochs=2, warmup_epochs=0, steps=5).rate(0) == 1e-3


def _toy():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = keras.ops.one_hot(np.arange(32) % 2, 2)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # 4 steps an epoch
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    compile_model(model, optimizer="adam", learning_rate=1e-2)
    return model, ds


def test_fit_phase_trains_each_epoch_at_the_scheduled_rate_and_resumes_on_it(tmp_path):
    settings = dict(
        name="fine_tune",
        state_dir=tmp_path,
        fingerprint="f",
        patience=50,
        reduce_lr_patience=1,  # would halve the rate at once if the plateau rule still ran
        reduce_lr_factor=0.5,
        min_lr=1e-7,
    )
    model, ds = _toy()
    schedule = WarmupCosine(1e-2, epochs=3, warmup_epochs=1, steps=len(ds))
    rows = fit_phase(model, ds, ds, epochs=2, schedule=schedule, **settings)
    # a re-run asked for 3 epochs goes on from epoch 2, with a new callback object
    (tmp_path / "fine_tune" / "state.json").write_text(
        (tmp_path / "fine_tune" / "state.json").read_text().replace('"done": true', '"done": false')
    )
    model, ds = _toy()
    again = WarmupCosine(1e-2, epochs=3, warmup_epochs=1, steps=len(ds))
    rows = fit_phase(model, ds, ds, epochs=3, schedule=again, **settings)
    logged = [r["lr"] for r in rows]
    expected = [schedule.rate(4 * e + 3) for e in range(3)]  # each epoch's last step
    np.testing.assert_allclose(logged, expected, rtol=1e-5)
