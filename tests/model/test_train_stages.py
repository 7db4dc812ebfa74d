"""The backbone, features and train stages on a tiny project (3 classes, 32 px, random base).

These train real (tiny) models: marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from tasks import calibration
from tasks.backbone import build_backbone_stage, check_validation
from tasks.common import UserError
from tasks.dataset import open_prepared
from tasks.features import extract
from tasks.model import backbone_of, build_backbone, head_of, load_model
from tasks.train import runs_for, train_run
from tests.model.train_helpers import CLASSES, live_log, make_project, project_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_weights(tmp_path_factory) -> Path:
    """A random-weight ResNet-50 base saved once: the 'backbone' every test starts from."""
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("base") / "random.weights.h5"
    build_backbone(None).save_weights(path)
    return path


def _weights_by_layer(model: keras.Model) -> dict[str, list[np.ndarray]]:
    return {
        layer.name: [np.asarray(w) for w in layer.weights]
        for layer in model.layers
        if layer.weights
    }


def _with_features(root: Path, params) -> None:
    extract(
        prepared=open_prepared(root / "prepared"),
        weights=root / "backbone" / "backbone.weights.h5",
        image_size=params.train.image_size,
        batch_size=8,
        out=root / "features",
    )


def test_feature_extraction_head_on_cache_equals_the_full_model(tmp_path, base_weights):
    root = make_project(tmp_path, base_weights, train={"units": [16], "dropout": 0.1})
    params = project_params(root, **{"train.strategy": "feature_extraction"})
    _with_features(root, params)
    [run] = runs_for(params.train)
    info = train_run(
        run,
        prepared=open_prepared(root / "prepared"),
        weights=root / "backbone" / "backbone.weights.h5",
        cfg=params.train,
    )

    out = root / "models" / "feature_extraction"
    files = {p.name for p in out.iterdir()}
    assert {"dvclive", "history.json", "model.keras", "train.json"} <= files
    model = load_model(out / "model.keras")
    # the saved model is the full one: raw uint8 images in, one probability per class out
    assert model.input.dtype == "uint8" and model.output.shape[-1] == len(CLASSES)
    test_images = np.load(root / "prepared" / "test" / "images.npy")
    test_features = np.load(root / "features" / "test.npy")
    full = model.predict(test_images, verbose=0)
    cached = head_of(model).predict(test_features, verbose=0)
    np.testing.assert_allclose(full, cached, atol=1e-5)
    assert (full.argmax(1) == cached.argmax(1)).all()

    # the frozen base is exactly the backbone it started from
    start = _weights_by_layer(build_backbone(root / "backbone" / "backbone.weights.h5"))
    after = _weights_by_layer(backbone_of(model))
    for name, ws in start.items():
        for a, b in zip(ws, after[name], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)

    history = json.loads((out / "history.json").read_text())
    assert [p["name"] for p in history["phases"]] == ["head"]
    epochs = history["phases"][0]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert set(epochs[0]) == {
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "seconds",
    }
    # DVCLive logged the same epochs, one step each (what `dvc plots` / `dvc exp show` read)
    live = out / "dvclive"
    assert live_log(live, "eval/loss") == [(0, epochs[0]["val_loss"]), (1, epochs[1]["val_loss"])]
    assert live_log(live, "train/accuracy") == [(i, e["accuracy"]) for i, e in enumerate(epochs)]
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == 1 and summary["eval"]["accuracy"] == epochs[1]["val_accuracy"]
    assert info["strategy"] == "feature_extraction" and info["classes"] == CLASSES
    # val accuracy is the saved model's, and a temperature fitted on its val probabilities
    val_labels = np.load(root / "prepared" / "val" / "labels.npy")
    val_probs = model.predict(np.load(root / "prepared" / "val" / "images.npy"), verbose=0)
    assert info["val_accuracy"] == round(float(np.mean(val_probs.argmax(1) == val_labels)), 4)
    fit = info["calibration"]
    assert fit["temperature"] == calibration.fit_temperature(val_labels, val_probs)
    assert 0.05 <= fit["temperature"] <= 20 and {"val_ece", "val_ece_calibrated"} <= set(fit)
    assert not (root / "checkpoints" / "feature_extraction").exists()  # resume state cleaned


def test_fine_tune_changes_only_the_unfrozen_layers(tmp_path, base_weights):
    root = make_project(
        tmp_path,
        base_weights,
        # phase 1 barely moves (lr 1e-5), so phase 2 (lr 1e-3) beats its val loss and is kept
        train={
            "unfreeze": 12,
            "epochs": 1,
            "learning_rate": 1e-5,
            "fine_tune": {"epochs": 1, "learning_rate": 1e-3, "schedule": "plateau"},
        },
    )
    params = project_params(root)
    _with_features(root, params)
    [run] = runs_for(params.train)
    info = train_run(
        run,
        prepared=open_prepared(root / "prepared"),
        weights=root / "backbone" / "backbone.weights.h5",
        cfg=params.train,
    )
    assert info["unfreeze"]["layers"] == 12 and info["unfreeze"]["weighted_layers"] == 3
    # what really ran: no GPU here, so float32; XLA neither for the head nor as asked (off)
    assert info["hardware"] == {
        "policy": "float32",
        "gpus": 0,
        "xla": {"head": False, "fine_tune": False},
    }

    model = load_model(root / "models" / "fine_tune" / "model.keras")
    start = _weights_by_layer(build_backbone(root / "backbone" / "backbone.weights.h5"))
    after = _weights_by_layer(backbone_of(model))
    changed = {
        name
        for name, ws in start.items()
        if any(not np.array_equal(a, b) for a, b in zip(ws, after[name], strict=True))
    }
    # the top 12 layers hold 3 convs (+ BatchNorms, which stay frozen, statistics included)
    assert changed == {"conv5_block3_1_conv", "conv5_block3_2_conv", "conv5_block3_3_conv"}
    history = json.loads((root / "models" / "fine_tune" / "history.json").read_text())
    assert [p["name"] for p in history["phases"]] == ["head", "fine_tune"]
    assert history["phases"][1]["epochs"][0]["lr"] == pytest.approx(1e-3)
    # one DVCLive log per model: the fine-tuning epoch is the step after the head's
    live = root / "models" / "fine_tune" / "dvclive"
    assert live_log(live, "train/learning_rate") == [
        (0, pytest.approx(1e-5)),
        (1, pytest.approx(1e-3)),
    ]


def test_augmented_feature_extraction_trains_through_the_frozen_base(tmp_path, base_weights):
    root = make_project(
        tmp_path,
        base_weights,
        n=(12, 6, 6),
        train={"epochs": 1, "augment": {"enabled": True, "flip": "horizontal"}},
    )
    params = project_params(root, **{"train.strategy": "feature_extraction"})
    [run] = runs_for(params.train)  # no features stage: augmentation needs none
    info = train_run(
        run,
        prepared=open_prepared(root / "prepared"),
        weights=root / "backbone" / "backbone.weights.h5",
        cfg=params.train,
    )
    assert info["augment"] is True
    model = load_model(root / "models" / "feature_extraction" / "model.keras")
    x = np.load(root / "prepared" / "test" / "images.npy")
    # augmentation is inactive at inference: predictions are deterministic
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_sweep_names_one_folder_per_setting(tmp_path, base_weights):
    root = make_project(tmp_path, base_weights)
    params = project_params(
        root, **{"train.strategy": "sweep", "train.sweep.unfreeze": [3, "conv5"]}
    )
    names = [r.out.name for r in runs_for(params.train)]
    assert names == [
        "unfreeze-3-aug-false",
        "unfreeze-3-aug-true",
        "unfreeze-conv5-aug-false",
        "unfreeze-conv5-aug-true",
    ]
    assert all(r.strategy == "fine_tune" for r in runs_for(params.train))


def test_backbone_from_a_weights_file_local_and_s3(tmp_path, base_weights, s3_server):
    root = make_project(tmp_path, base_weights)
    params = project_params(root)
    prepared = open_prepared(root / "prepared")
    out = tmp_path / "bb-local"
    info = build_backbone_stage(
        prepared=prepared,
        cfg=project_params(root, **{"backbone.weights": str(base_weights)}).backbone,
        train=params.train,
        s3_endpoint_url=None,
        out=out,
    )
    assert info["weights"] == str(base_weights)
    want = _weights_by_layer(build_backbone(base_weights))
    got = _weights_by_layer(build_backbone(out / "backbone.weights.h5"))
    assert all(np.array_equal(want[k][0], got[k][0]) for k in want)

    s3 = s3_server.client()
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(base_weights), "models", "resnet/base.weights.h5")
    cfg = project_params(root, **{"backbone.weights": "s3://models/resnet/base.weights.h5"})
    info = build_backbone_stage(
        prepared=prepared,
        cfg=cfg.backbone,
        train=params.train,
        s3_endpoint_url=s3_server.endpoint_url,
        out=tmp_path / "bb-s3",
    )
    assert (tmp_path / "bb-s3" / "backbone.weights.h5").is_file()
    cfg = project_params(root, **{"backbone.weights": "s3://models/resnet/missing.weights.h5"})
    with pytest.raises(UserError, match="S3 error"):
        build_backbone_stage(
            prepared=prepared,
            cfg=cfg.backbone,
            train=params.train,
            s3_endpoint_url=s3_server.endpoint_url,
            out=tmp_path / "bb-x",
        )
    assert not (tmp_path / "bb-x").exists()  # nothing half-written


def test_source_backbone_learns_without_the_held_out_class(tmp_path, base_weights):
    root = make_project(tmp_path, base_weights, n=(12, 6, 6), backbone={"holdout": ["bright"]})
    params = project_params(root)
    out = root / "source"
    info = build_backbone_stage(
        prepared=open_prepared(root / "prepared"),
        cfg=params.backbone,
        train=params.train,
        s3_endpoint_url=None,
        out=out,
    )
    assert info["classes"] == ["dark", "mid"] and info["holdout"] == ["bright"]
    assert 0 <= info["val_accuracy"] <= 1 and len(info["history"]) == 1
    assert live_log(out / "dvclive", "eval/accuracy") == [(0, info["history"][0]["val_accuracy"])]
    assert not (root / "checkpoints" / "backbone").exists()  # resume state gone once saved
    source = load_model(out / "model.keras")
    assert source.output.shape[-1] == 2  # the held-out class is not a class of it
    assert json.loads((out / "backbone.json").read_text())["weights_sha256"]
    bad = project_params(root, **{"backbone.holdout": ["purple"]})
    with pytest.raises(UserError, match=r"backbone.holdout: \['purple'\] not in the dataset"):
        build_backbone_stage(
            prepared=open_prepared(root / "prepared"),
            cfg=bad.backbone,
            train=params.train,
            s3_endpoint_url=None,
            out=tmp_path / "x",
        )


def test_training_refuses_data_that_failed_validation(tmp_path):
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"passed": False}))
    with pytest.raises(UserError, match="failed validation"):
        check_validation(summary)
    summary.write_text(json.dumps({"passed": True}))
    check_validation(summary)


def test_stale_feature_cache_is_refused(tmp_path, base_weights):
    root = make_project(tmp_path, base_weights)
    params = project_params(root, **{"train.strategy": "feature_extraction"})
    _with_features(root, params)
    other = tmp_path / "other.weights.h5"
    keras.utils.set_random_seed(1)
    build_backbone(None).save_weights(other)
    [run] = runs_for(params.train)
    with pytest.raises(UserError, match="other backbone weights"):
        train_run(run, prepared=open_prepared(root / "prepared"), weights=other, cfg=params.train)
