"""Figures: activations and filters have the shapes of the named layers, gradient ascent
really excites the filter, and every figure builder returns a Figure without touching disk."""

from __future__ import annotations

import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from matplotlib.figure import Figure  # noqa: E402

from tasks.common import UserError  # noqa: E402
from tasks.figures import activations, curves, data, errors, filters, gradcam, png_bytes  # noqa: E402
from tasks.figures.network import split, viewable  # noqa: E402
from tasks.model import build_model  # noqa: E402

LAYERS = ("conv1_relu", "conv2_block3_out", "conv4_block6_out")
CLASSES = ["zero", "one", "two"]


@pytest.fixture(scope="module")
def chain():
    """A project model (random ResNet-50, weights=None) at 32 px, resized to 64 inside."""
    keras.utils.set_random_seed(0)
    return split(build_model(num_classes=3, input_size=32, image_size=64))


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)


@pytest.mark.slow
def test_activations_have_the_named_layers_shapes(chain, image):
    maps = activations.activations(chain, image, LAYERS)
    assert list(maps) == list(LAYERS)
    # ResNet-50 at a 64 px backbone input: /2 after conv1, /4 after conv2, /16 after conv4
    assert {k: v.shape for k, v in maps.items()} == {
        "conv1_relu": (32, 32, 64),
        "conv2_block3_out": (16, 16, 256),
        "conv4_block6_out": (4, 4, 1024),
    }
    for name, m in maps.items():
        assert m.shape[-1] == chain.layer(name).output.shape[-1]
    assert (maps["conv1_relu"] >= 0).all()  # after a ReLU


@pytest.mark.slow
def test_auto_gradcam_layer_is_the_deepest_block_still_wide_enough(chain, image):
    from tasks.figures.network import deepest_block

    # backbone input 64 px: conv5 blocks are 2x2, conv4 blocks 4x4, conv3 blocks 8x8
    assert deepest_block(chain, image, min_side=2) == "conv5_block3_out"
    assert deepest_block(chain, image, min_side=4) == "conv4_block6_out"
    assert deepest_block(chain, image, min_side=5) == "conv3_block4_out"


@pytest.mark.slow
def test_auto_activation_layers_are_the_stage_outputs_wide_enough_at_the_run_size(image):
    from tasks.params import section
    from tasks.visualize import activation_layers

    at32 = split(build_model(num_classes=3, input_size=32, image_size=32))
    wide, small = activations.auto_layers(at32, image, min_side=4)
    # a 32 px backbone input: conv1 16, conv2 8, conv3 4, conv4 2, conv5 1 px
    assert wide == {"conv1_relu": (16, 16), "conv2_block3_out": (8, 8), "conv3_block4_out": (4, 4)}
    assert small == {"conv4_block6_out": (2, 2), "conv5_block3_out": (1, 1)}
    layers, note = activation_layers(section("visualize", min_map_side=4), at32, image)
    assert layers == list(wide) and "conv4_block6_out (2x2), conv5_block3_out (1x1)" in note
    at224 = split(build_model(num_classes=3, input_size=32, image_size=224))
    wide, small = activations.auto_layers(at224, image, min_side=4)
    assert list(wide)[-2:] == ["conv4_block6_out", "conv5_block3_out"] and not small
    assert wide["conv5_block3_out"] == (7, 7)
    with pytest.raises(UserError, match="min_map_side = 20: no stage output"):
        activation_layers(section("visualize", min_map_side=20), at32, image)
    fig = activations.activations_figure(
        {"a": activations.activations(at32, image, ["conv3_block4_out"])["conv3_block4_out"]},
        layer="conv3_block4_out",
        channels=4,
        input_side=32,
    )
    assert (
        fig.get_suptitle()
        == "conv3_block4_out: 4x4 maps at 32 px input, 4 strongest of 512 channels"
    )


@pytest.mark.slow
def test_difference_rows_are_zero_for_identical_models_and_show_what_changed(
    chain, image, tmp_path
):
    from tasks.model import load_model

    chain.model.save(tmp_path / "m.keras")  # two loads: same weights, as FE and its source
    same, tuned = (split(load_model(tmp_path / "m.keras")) for _ in range(2))
    conv = tuned.layer("conv3_block1_1_conv")  # "fine-tuning" conv3 only
    conv.set_weights([w * 1.5 for w in conv.get_weights()])
    layers = ["conv2_block3_out", "conv3_block4_out"]
    chains = {"source": chain, "fe": same, "ft": tuned}
    maps = {n: activations.activations(c, image, layers) for n, c in chains.items()}
    conv2 = {n: m["conv2_block3_out"] for n, m in maps.items()}
    conv3 = {n: m["conv3_block4_out"] for n, m in maps.items()}
    d2, d3 = activations.changes(conv2), activations.changes(conv3)
    assert list(d3) == ["fe - source", "ft - fe"]
    assert not d2["fe - source"].any() and not d2["ft - fe"].any()  # below the change: 0
    assert not d3["fe - source"].any() and d3["ft - fe"].mean() > 1e-3
    np.testing.assert_array_equal(d3["ft - fe"], np.abs(conv3["ft"] - conv3["fe"]))
    assert activations.change_note(conv2, d2) == (
        "fe - source: 0 everywhere (no layer up to here trained); "
        "ft - fe: 0 everywhere (no layer up to here trained)"
    )
    assert "mean |ft - fe| = " in activations.change_note(conv3, d3)
    # a zero difference is said in the title, a non-zero one drawn as a row: 3 or 4 rows of 4
    fig2 = activations.activations_figure(conv2, layer="l", channels=4, diffs=d2)
    fig3 = activations.activations_figure(conv3, layer="l", channels=4, diffs=d3)
    assert len(fig2.axes) == 3 * 4 and len(fig3.axes) == 4 * 4
    assert fig3.axes[-1].get_ylabel() == "" and fig3.axes[12].get_ylabel() == "|ft - fe|"

    kern = filters.kernel_changes(chains, "conv1_conv")
    assert not any(d.any() for d in kern.values())  # conv1 frozen in both
    assert "ft - fe: conv1_conv frozen (weights identical)" in filters.kernel_change_note(
        kern, "conv1_conv"
    )
    first = tuned.layer("conv1_conv")
    w = first.get_weights()
    w[0][..., 5] += 0.01  # kernel 5 trained
    first.set_weights(w)
    kern = filters.kernel_changes(chains, "conv1_conv")
    moved = np.abs(kern["ft - fe"]).max(axis=(1, 2, 3))  # (64,) per kernel
    assert np.flatnonzero(moved) == [5] and moved[5] == pytest.approx(0.01, rel=1e-3)
    tiles = {n: filters.kernels(c, "conv1_conv") for n, c in chains.items()}
    fig = filters.kernels_figure(tiles, layer="conv1_conv", changes=kern)
    assert [ax.get_title() for ax in fig.axes] == ["source", "fe", "ft", "ft - fe"]


@pytest.mark.slow
def test_first_conv_kernels_are_rgb_tiles_of_the_layer(chain):
    tiles = filters.kernels(chain, "conv1_conv")
    w = chain.layer("conv1_conv").get_weights()[0]  # (7, 7, 3, 64)
    assert tiles.shape == (64, 7, 7, 3)
    assert tiles.min() >= 0 and tiles.max() <= 1
    # tile k is kernel k with channels flipped BGR -> RGB, min-max stretched
    k = w[..., 5][..., ::-1]
    np.testing.assert_allclose(tiles[5], (k - k.min()) / (k.max() - k.min()), rtol=1e-5)
    with pytest.raises(ValueError, match="not a conv layer over 3 input channels"):
        filters.kernels(chain, "conv2_block1_1_conv")


def low_frequency_share(image: np.ndarray, cutoff: float = 0.125) -> float:
    """Share of an (h, w, 3) image's power (mean removed) below `cutoff` cycles per pixel:
    about pi * cutoff^2 = 0.049 for white noise, most of it for a natural image."""
    x = np.asarray(image, np.float64) - np.mean(image, axis=(0, 1))
    power = (np.abs(np.fft.fft2(x, axes=(0, 1))) ** 2).sum(-1)  # (h, w)
    f = np.hypot(np.fft.fftfreq(x.shape[0])[:, None], np.fft.fftfreq(x.shape[1])[None, :])
    return float(power[(f > 0) & (f < cutoff)].sum() / power[f > 0].sum())


@pytest.mark.slow
def test_gradient_ascent_excites_the_chosen_filters_with_structured_patterns(chain):
    layer, chosen = "conv2_block3_out", [3, 40]
    tap = chain.taps([layer])
    start = filters.ascend(chain, layer, chosen, steps=1, lr=1e-9, seed=0)  # where it starts
    before = np.asarray(tap(start))  # (2, 16, 16, 256)
    x = filters.ascend(chain, layer, chosen, steps=20, lr=0.2, seed=0, jitter=2)
    assert x.shape == (2, 64, 64, 3)
    after = np.asarray(tap(x))
    for row, f in enumerate(chosen):
        assert after[row, ..., f].mean() > 1.5 * before[row, ..., f].mean() + 1e-3
        others = np.delete(after[row], f, axis=-1).mean(axis=(0, 1))  # (255,)
        assert after[row, ..., f].mean() > np.percentile(others, 90)  # it is singled out
    # not pixel noise: most of the power is at low frequencies (per-pixel ascent had 0.03-0.05)
    noise = np.random.default_rng(0).normal(size=(64, 64, 3))
    assert low_frequency_share(noise) == pytest.approx(0.049, abs=0.01)
    for pattern in x:
        assert low_frequency_share(pattern) > 0.4
    pats = filters.preferred_inputs(chain, layer, chosen, steps=1, lr=0.05)
    assert pats.shape == (2, 64, 64, 3) and pats.min() >= 0 and pats.max() <= 1
    with pytest.raises(ValueError, match="has 256 channels"):
        filters.preferred_inputs(chain, layer, [300], steps=1, lr=0.05)


@pytest.mark.slow
def test_every_figure_builder_returns_a_figure_and_writes_nothing(
    chain, image, tmp_path, monkeypatch
):
    import matplotlib

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(12) % 3
    probs = rng.dirichlet(np.ones(3), 12)
    cm = np.array([[3, 1, 0], [0, 2, 2], [1, 0, 3]])
    history = {
        "phases": [
            {
                "name": "head",
                "epochs": [
                    {
                        "epoch": i,
                        "loss": 1 / (i + 1),
                        "accuracy": i / 4,
                        "val_loss": 1.2 / (i + 1),
                        "val_accuracy": i / 5,
                    }
                    for i in range(3)
                ],
            },
            {
                "name": "fine_tune",
                "epochs": [
                    {"epoch": 0, "loss": 0.2, "accuracy": 0.9, "val_loss": 0.3, "val_accuracy": 0.8}
                ],
            },
        ]
    }
    seen = viewable(np.asarray(chain.preprocess(image[None]))[0])
    maps = {"a": activations.activations(chain, image, ["conv1_relu"])["conv1_relu"]}
    maps["b"] = maps["a"] * 2
    cams, _ = gradcam.gradcam(chain, imgs[:2], layer="conv4_block6_out")
    pairs = [{"a": "zero", "b": "one", "total": 2}]
    built = [
        data.samples_figure(imgs, labels, CLASSES, per_class=3),
        data.preprocessing_figure(image, seen, label="zero"),
        curves.learning_curves_figure(history, title="m"),
        curves.comparison_figure(
            [
                {"model": "fe", "accuracy": 0.8, "trainable_params": 6000, "augmentation": "no"},
                {"model": "ft", "accuracy": 0.9, "trainable_params": 2e6, "augmentation": "yes"},
            ]
        ),
        activations.activations_figure(maps, layer="conv1_relu", channels=4),
        filters.kernels_figure({"a": filters.kernels(chain, "conv1_conv")}, layer="conv1_conv"),
        filters.preferred_inputs_figure({"a": seen[None].repeat(2, 0)}, layer="x", filters=[0, 1]),
        gradcam.gradcam_figure(imgs[:2], cams, ["x", "y"]),
        errors.confusion_figure(cm, CLASSES),
        errors.misclassified_figure(
            imgs[:3], labels[:3], (labels[:3] + 1) % 3, probs[:3, 0], CLASSES
        ),
        errors.misclassified_figure(imgs[:0], labels[:0], labels[:0], probs[:0, 0], CLASSES),
        errors.pairs_figure(pairs, [(list(imgs[:2]), ["zero as one", "one as zero"])]),
    ]
    assert os.listdir(tmp_path) == []  # nothing written
    assert matplotlib.get_backend().lower() == "agg"
    for fig in built:
        assert isinstance(fig, Figure)
        png = png_bytes(fig, dpi=40)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert os.listdir(tmp_path) == []


def test_confusion_figure_shows_counts_and_rates():
    fig = errors.confusion_figure(np.array([[3, 1], [0, 4]]), ["cat", "dog"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "3\n75%" in texts and "1\n25%" in texts and "4\n100%" in texts
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["cat (4)", "dog (4)"]


def test_learning_curves_put_both_phases_on_one_axis_with_the_boundary():
    history = {
        "phases": [
            {
                "name": "head",
                "epochs": [{"loss": 1.0, "val_loss": 1.1}, {"loss": 0.8, "val_loss": 1}],
            },
            {"name": "fine_tune", "epochs": [{"loss": 0.5, "val_loss": 0.7}]},
        ]
    }
    fig = curves.learning_curves_figure(history)
    loss_ax = fig.axes[0]
    train = loss_ax.lines[0]
    assert list(train.get_xdata()) == [1, 2, 3] and list(train.get_ydata()) == [1.0, 0.8, 0.5]
    boundaries = [ln for ln in loss_ax.lines if ln.get_linestyle() == ":"]
    assert [ln.get_xdata()[0] for ln in boundaries] == [2.5]


@pytest.mark.slow
def test_stage_changes_are_zero_when_frozen_and_name_the_trained_stage(chain, tmp_path):
    """A copy of the model with only conv5's kernels moved: weights change only in conv5,
    the conv1..conv4 outputs do not move and the conv5 output does, at 1x1 maps too."""
    from tasks.figures import changes, save

    model = chain.model
    trained = keras.models.clone_model(model)
    trained.set_weights(model.get_weights())
    moved = split(trained)
    for layer in moved.backbone.layers:
        if layer.name.startswith("conv5") and isinstance(layer, keras.layers.Conv2D):
            layer.kernel.assign(layer.kernel * 1.1)
    images = np.random.default_rng(2).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    stages = activations.stage_outputs(chain)
    found = changes.pair_changes({"fe": chain, "same": chain, "ft": moved}, images, stages)
    frozen, tuned = found["same - fe"], found["ft - same"]
    assert not any(frozen[0].values()) and max(frozen[1].values()) < 1e-6
    assert {n.split("_")[0] for n, v in tuned[0].items() if v > 0} == {"conv5"}
    assert all(abs(v - 0.1) < 1e-3 for n, v in tuned[0].items() if n.startswith("conv5"))
    assert max(tuned[1][s] for s in stages[:-1]) < 1e-6 < tuned[1][stages[-1]]
    note = changes.change_note(found)
    assert "same - fe: no backbone weight changed (frozen)" in note
    assert "ft - same: weights of conv5 changed" in note
    path = save(changes.changes_figure(found), tmp_path / "changes.png", dpi=60)
    print(path)
    assert path.stat().st_size > 10_000
