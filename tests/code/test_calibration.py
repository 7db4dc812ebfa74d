"""Calibration: ECE and the reliability bins as defined, and temperature scaling that makes an
over-confident model honest without changing a single top-1 label."""

from __future__ import annotations

import numpy as np
import pytest

from tasks import calibration


def overconfident(n: int = 2000, classes: int = 4, seed: int = 0):
    """Labels and probabilities of a model right 70% of the time but ~97% sure of itself."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    pred = np.where(rng.random(n) < 0.7, y, (y + rng.integers(1, classes, n)) % classes)
    logits = rng.normal(0, 0.3, (n, classes))
    logits[np.arange(n), pred] += 4.0
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def test_ece_is_the_count_weighted_gap_between_accuracy_and_confidence() -> None:
    # 4 images at confidence 0.9 (3 right) and 2 at 0.6 (both right):
    # 4/6 * |0.75 - 0.9| + 2/6 * |1.0 - 0.6| = 0.1 + 0.1333
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    y = np.array([0, 0, 0, 1, 0, 0])
    assert calibration.ece(y, probs) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.4)
    bins = calibration.reliability(y, probs)
    assert [(b["count"], round(b["accuracy"], 2)) for b in bins] == [(2, 1.0), (4, 0.75)]
    assert all(b["lo"] < b["confidence"] <= b["hi"] for b in bins)


def test_a_perfectly_calibrated_model_needs_no_temperature() -> None:
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.5, 1.0, 20000)
    y = np.where(rng.random(20000) < conf, 0, 1)  # right with exactly the stated confidence
    probs = np.stack([conf, 1 - conf], axis=1)
    assert calibration.ece(y, probs) < 0.02
    assert calibration.fit_temperature(y, probs) == pytest.approx(1.0, abs=0.1)


def test_temperature_scaling_cuts_the_ece_of_an_overconfident_model_and_keeps_its_labels() -> None:
    y_val, p_val = overconfident(seed=0)
    y_test, p_test = overconfident(seed=1)
    fit = calibration.fitted(y_val, p_val)
    assert fit["temperature"] > 1.5  # softened
    assert fit["val_ece"] > 0.2 and fit["val_ece_calibrated"] < 0.05
    scaled = calibration.scale(p_test, fit["temperature"])
    assert calibration.ece(y_test, scaled) < calibration.ece(y_test, p_test) / 4  # held out too
    assert (scaled.argmax(1) == p_test.argmax(1)).all()
    assert np.allclose(scaled.sum(1), 1.0, atol=1e-5)


def test_a_model_trained_before_calibration_is_left_as_it_was() -> None:
    assert calibration.temperature_of({"val_accuracy": 0.9}) == 1.0
    probs = np.array([[0.7, 0.2, 0.1]], np.float32)
    assert np.array_equal(calibration.scale(probs, 1.0), probs)
    assert calibration.fit_temperature(np.array([], int), np.zeros((0, 3))) == 1.0
