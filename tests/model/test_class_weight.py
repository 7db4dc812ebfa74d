"""train.class_weight: a skewed training set's rare class weighs more in the loss."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tasks.common import UserError
from tasks.training import array_dataset, class_weights, compile_model, fit_phase

CLASSES = ["common", "rare"]


def test_weights_from_the_param() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    assert class_weights("none", labels, CLASSES) is None
    balanced = class_weights("balanced", labels, CLASSES)
    assert balanced == pytest.approx({0: 100 / (2 * 90), 1: 100 / (2 * 10)})
    assert class_weights({"rare": 4.0}, labels, CLASSES) == {0: 1.0, 1: 4.0}
    with pytest.raises(UserError, match=r"train.class_weight names \['ship'\].*common, rare"):
        class_weights({"ship": 2.0}, labels, CLASSES)
    # a class missing from train keeps weight 1 (balanced is only defined for those present)
    assert class_weights("balanced", np.zeros(5, int), CLASSES) == {0: 1.0, 1: 1.0}


def rare_recall(tmp_path, spec) -> float:
    """Recall of the rare class after fitting a logistic model on overlapping 1-d data."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, 900), rng.normal(1.5, 1, 100)]).astype("float32")
    y = np.array([0] * 900 + [1] * 100)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation="softmax")])
    compile_model(model, optimizer="adam", learning_rate=0.05)
    ds = array_dataset(x[:, None], y, num_classes=2, batch_size=100, shuffle=True, seed=0)
    fit_phase(
        model,
        ds,
        ds,
        name=str(spec),
        epochs=30,
        state_dir=tmp_path,
        fingerprint="f",
        patience=100,
        reduce_lr_patience=100,
        reduce_lr_factor=0.5,
        min_lr=0.0,
        class_weight=class_weights(spec, y, CLASSES),
    )
    predicted = model.predict(x[:, None], verbose=0).argmax(axis=1)
    return float((predicted[y == 1] == 1).mean())


def test_balanced_weights_bring_the_rare_class_back(tmp_path) -> None:
    plain, weighted = rare_recall(tmp_path, "none"), rare_recall(tmp_path, "balanced")
    assert plain < 0.3 < 0.6 < weighted  # unweighted, the rare class is mostly swallowed
