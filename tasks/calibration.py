"""How far a model's confidence can be trusted, and temperature scaling to make it so.

A model is calibrated when, of the images it labels with 80% confidence, 80% are right.
Measured with the expected calibration error (ECE: the bins' |accuracy - confidence|,
weighted by how many images fall in each bin, Guo et al. 2017) and drawn as a reliability
diagram. Temperature scaling divides the logits by one number T fitted on val (T > 1
softens an over-confident model); it never changes the top-1 label, so accuracy stays.

The model ends in a softmax, so its logits are log(probabilities) up to a per-image constant,
which softmax cancels: softmax(log(p) / T) is exactly the temperature-scaled output.

Training fits T on val and stores it in the model's train.json (`calibration`); evaluate
reports ECE before/after on test, export builds T into every exported graph
(`calibrated_model`), and predict applies it to a .keras model.
"""

from __future__ import annotations

import numpy as np

BINS = 15  # confidence bins of the ECE and the reliability diagram (Guo et al.'s choice)
EPS = 1e-7  # Keras' epsilon: the smallest probability a log is taken of


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C) probabilities -> softmax(log(p) / T), float32 (T = 1 returns them as given)."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return probs.astype(np.float32)
    z = np.log(np.clip(probs, EPS, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_temperature(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the negative log-likelihood of `y_true` (N,) under
    scale(probs, T); 1.0 when there is nothing to fit on (no images)."""
    from scipy.optimize import minimize_scalar

    y_true = np.asarray(y_true)
    if not len(y_true):
        return 1.0
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0))

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_softmax[np.arange(len(y_true)), y_true].mean())

    best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return round(float(np.exp(best.x)), 4)


def reliability(y_true: np.ndarray, probs: np.ndarray, bins: int = BINS) -> list[dict]:
    """One row per non-empty confidence bin: lo, hi, confidence (mean top-1 probability),
    accuracy (share right) and count; what the ECE sums and the diagram draws."""
    probs = np.asarray(probs)
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)  # (lo, hi]
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "lo": round(float(edges[b]), 4),
                    "hi": round(float(edges[b + 1]), 4),
                    "confidence": float(conf[inside].mean()),
                    "accuracy": float(right[inside].mean()),
                    "count": int(inside.sum()),
                }
            )
    return rows


def ece(y_true: np.ndarray, probs: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: sum over bins of count/N * |accuracy - confidence|."""
    rows = reliability(y_true, probs, bins)
    n = sum(r["count"] for r in rows)
    return (
        float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows) / n)
        if n
        else 0.0
    )


def fitted(y_val: np.ndarray, probs_val: np.ndarray) -> dict:
    """train.json's `calibration`: T fitted on val and val's ECE before and after it."""
    t = fit_temperature(y_val, probs_val)
    return {
        "method": "temperature",
        "temperature": t,
        "val_ece": round(ece(y_val, probs_val), 4),
        "val_ece_calibrated": round(ece(y_val, scale(probs_val, t)), 4),
    }


def temperature_of(train_info: dict) -> float:
    """The T a model's train.json records; 1.0 (no scaling) for a model trained before."""
    return float((train_info.get("calibration") or {}).get("temperature", 1.0))


def calibrated_model(model, temperature: float):
    """A Keras model whose output is scale(model's output, T), for export: same input
    (name, dtype, shape), so the serving signature does not change. T = 1 returns `model`."""
    if temperature == 1.0:
        return model
    import keras
    from keras import ops

    inputs = keras.Input(
        batch_shape=model.input_shape, dtype=model.inputs[0].dtype, name=model.inputs[0].name
    )
    probs = model(inputs)
    logits = ops.log(ops.clip(ops.cast(probs, "float32"), EPS, 1.0)) / temperature
    return keras.Model(inputs, ops.softmax(logits, axis=-1), name=f"{model.name}_calibrated")
