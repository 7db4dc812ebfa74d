"""The transfer model (tasks/model.py) and its params: shapes, saving, unfreezing, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tasks.common import UserError
from tasks.model import (
    BACKBONE_NAME,
    ResNetPreprocess,
    backbone_of,
    build_backbone,
    build_model,
    head_of,
    load_model,
    select_layers,
    unfreeze,
)
from tasks.params import load_params
from tests.helpers import params_yaml, random_images


@pytest.fixture(scope="module")
def base() -> keras.Model:
    return build_backbone(None)


@pytest.mark.slow
def test_model_is_uint8_in_float32_probabilities_out_and_round_trips(tmp_path, base):
    model = build_model(
        num_classes=4, input_size=24, image_size=32, backbone=base, units=(8,), dropout=0.2, seed=1
    )
    assert model.input.dtype == "uint8" and model.input.shape == (None, 24, 24, 3)
    assert backbone_of(model).name == BACKBONE_NAME and head_of(model).output.shape[-1] == 4
    x = random_images(5, 24)
    probs = model.predict(x, verbose=0)
    assert probs.dtype == np.float32 and probs.shape == (5, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")  # safe mode: custom layers are registered
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), probs)


def test_preprocessing_is_resnet50_caffe_style():
    rgb = np.array([[[[255.0, 0.0, 10.0]]]], dtype=np.float32)  # (1, 1, 1, 3)
    out = np.asarray(ResNetPreprocess()(rgb))
    # BGR order, ImageNet means subtracted, no 1/255 scaling
    np.testing.assert_allclose(out[0, 0, 0], [10 - 103.939, 0 - 116.779, 255 - 123.68], rtol=1e-5)


def test_load_model_refuses_missing_and_unsafe_files(tmp_path):
    with pytest.raises(UserError, match="model file not found"):
        load_model(tmp_path / "nope.keras")
    inputs = keras.Input((2,))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    lam.save(tmp_path / "lambda.keras")
    with pytest.raises(UserError, match="cannot load the model"):
        load_model(tmp_path / "lambda.keras")  # arbitrary code is never deserialized


@pytest.mark.parametrize(
    ("spec", "layers", "weighted"),
    [
        (1, 1, 0),
        (3, 3, 0),  # avg_pool, conv5_block3_out, conv5_block3_add: no weights
        (6, 6, 1),
        (12, 12, 3),
        ("conv5", 33, 10),
        ("all", 175, 53),
    ],
)
def test_unfreeze_reports_what_really_trains(base, spec, layers, weighted):
    done = unfreeze(base, spec)
    assert (done.layers, done.weighted_layers) == (layers, weighted)
    trainable = [w for w in base.trainable_weights]
    assert done.trainable_params == sum(int(np.prod(w.shape)) for w in trainable)
    assert (done.trainable_params == 0) == (weighted == 0)
    for layer in base.layers:  # BatchNorm never trains
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable
    if spec == "conv5":
        names = {layer.name for layer in select_layers(base, spec)}
        assert all(n.startswith("conv5_") or n == "avg_pool" for n in names)


def test_unfreeze_rejects_bad_specs(base):
    with pytest.raises(UserError, match="has 175 layers"):
        unfreeze(base, 400)
    with pytest.raises(UserError, match="unknown stage"):
        unfreeze(base, "conv9")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.unfreeze", 400, "train.unfreeze: 400 is out of range"),
        ("train.unfreeze", "conv9", "train.unfreeze: 'conv9' is not a layer count"),
        ("train.learning_rate", -0.1, "train.learning_rate: -0.1 is out of range"),
        ("train.fine_tune.learning_rate", -1e-5, "train.fine_tune.learning_rate: -1e-05 is out"),
        ("train.sweep.unfreeze", [3, 999], r"train.sweep.unfreeze\[1\]: 999 is out of range"),
        ("train.strategy", "distill", "train.strategy: 'distill' is not allowed"),
        ("backbone.holdout", [], "backbone.holdout: the source model needs"),
    ],
)
def test_bad_params_fail_before_any_work(tmp_path, key, value, message):
    (tmp_path / "params.yaml").write_text(params_yaml())
    with pytest.raises(UserError, match=message):
        load_params(tmp_path / "params.yaml", {key: value})


@pytest.mark.slow
def test_weights_file_errors_are_clear(tmp_path):
    with pytest.raises(UserError, match="weights file not found"):
        build_backbone(tmp_path / "missing.weights.h5")
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="cannot load it as ResNet-50 base weights"):
        build_backbone(junk)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    other.save_weights(tmp_path / "other.weights.h5")  # another architecture
    with pytest.raises(UserError, match="cannot load it as ResNet-50 base weights"):
        build_backbone(tmp_path / "other.weights.h5")
