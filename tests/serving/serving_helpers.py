"""A tiny trained-model folder and prepared dataset for the export and predict tests.

The model is built by tasks.model.build_model (uint8 in, resize + ResNet preprocessing
inside, the real head) around a small convolutional base instead of ResNet-50: Keras
exports ResNet-50 in minutes on a loaded 2-core machine, this base in seconds, and every
export path (tracing, conversion, the runtimes) is the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests import helpers
from tests.helpers import params_yaml, write_prepared

CLASSES = ["dark", "mid", "bright"]
SIZE = 16  # prepared side; the model resizes to IMAGE_SIZE inside
IMAGE_SIZE = 24
TEMPERATURE = 2.5  # the model's recorded calibration: exports and predict must apply it


def class_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, SIZE, SIZE, 3) uint8 whose brightness tells the class, plus noise."""
    return helpers.class_images(n, seed, size=SIZE, classes=len(CLASSES))


def tiny_model(seed: int = 0):
    import keras

    from tasks.model import FEATURES_DIM, build_model

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    base = keras.Model(inputs, keras.layers.Dense(FEATURES_DIM)(x), name="resnet50")
    return build_model(
        num_classes=len(CLASSES), input_size=SIZE, image_size=IMAGE_SIZE, backbone=base, units=(8,)
    )


def make_project(root: Path, *, n_test: int = 12) -> Path:
    """prepared/ (test split only matters), models/fine_tune/model.keras, params.yaml."""
    write_prepared(
        root / "prepared",
        {"train": class_images(6, 0), "val": class_images(3, 1), "test": class_images(n_test, 2)},
        CLASSES,
    )
    (root / "models" / "fine_tune").mkdir(parents=True)
    tiny_model().save(root / "models" / "fine_tune" / "model.keras")
    (root / "models" / "fine_tune" / "train.json").write_text(  # as training writes it
        json.dumps({"calibration": {"method": "temperature", "temperature": TEMPERATURE}})
    )
    params = {
        "data": {"prepared_dir": str(root / "prepared")},
        "train": {"models_dir": str(root / "models")},
        "export": {
            "models": [str(root / "models" / "fine_tune")],
            "out_dir": str(root / "exports"),
            "latency_repeats": 2,
            "throughput_batch": 8,
        },
    }
    (root / "params.yaml").write_text(params_yaml(params))
    return root
