"""Grad-CAM points at the evidence: a model whose decision depends on one image region
gets its heatmap peak there, for the class asked; and it works through the nested ResNet-50."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tasks.figures.gradcam import gradcam, logits  # noqa: E402
from tasks.figures.network import split  # noqa: E402
from tasks.model import BACKBONE_NAME, build_model  # noqa: E402

RED, GREEN = 0, 1


def colour_model() -> keras.Model:
    """A 2-class conv model whose evidence is local: the amount of pure red / green.

    backbone (named like ResNet-50's, so the project's splitting applies):
      "colour"    1x1 conv + ReLU: channel 0 = r - g - b (red), channel 1 = g - r - b (green)
      pool 4x4 -> "last_conv" 1x1 identity conv + ReLU                      (B, 8, 8, 2)
    head: global average -> Dense with softmax, logit_c = 10 * mean(channel c).
    Grey and blue pixels give 0 in both channels, so only red/green patches decide.
    """
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(2, 1, activation="relu", name="colour")(inputs)
    x = keras.layers.AveragePooling2D(4)(x)
    x = keras.layers.Conv2D(2, 1, activation="relu", name="last_conv")(x)
    backbone = keras.Model(inputs, x, name=BACKBONE_NAME)
    backbone.get_layer("colour").set_weights(
        [np.array([[1, -1], [-1, 1], [-1, -1]], "float32").reshape(1, 1, 3, 2), np.zeros(2)]
    )
    backbone.get_layer("last_conv").set_weights(
        [np.eye(2, dtype="float32")[None, None], np.zeros(2)]
    )
    outer_in = keras.Input((32, 32, 3))
    y = keras.layers.GlobalAveragePooling2D()(backbone(outer_in))
    dense = keras.layers.Dense(2, activation="softmax")
    out = dense(y)
    dense.set_weights([10 * np.eye(2, dtype="float32"), np.zeros(2)])
    return keras.Model(outer_in, out)


def scene(
    red_at: tuple[int, int], green_at: tuple[int, int], blue_at: tuple[int, int], seed: int
) -> np.ndarray:
    """Grey noise with an 8x8 red, a 4x4 green and an 8x8 blue (distractor) patch."""
    rng = np.random.default_rng(seed)
    img = np.repeat(rng.uniform(0, 0.6, (32, 32, 1)), 3, axis=-1).astype("float32")
    for (r, c), colour, side in (
        (red_at, (1, 0, 0), 8),
        (green_at, (0, 1, 0), 4),
        (blue_at, (0, 0, 1), 8),
    ):
        img[r : r + side, c : c + side] = colour
    return img


CASES = [((0, 0), (24, 24), (16, 0)), ((20, 12), (4, 28), (0, 16)), ((8, 24), (28, 0), (24, 8))]


def test_heatmap_peaks_on_the_patch_that_decides_the_class():
    chain = split(colour_model())
    images = np.stack([scene(r, g, b, seed=i) for i, (r, g, b) in enumerate(CASES)])
    assert (np.asarray(chain.model(images)).argmax(1) == RED).all()  # the big red patch wins

    maps, explained = gradcam(chain, images, layer="last_conv")
    assert maps.shape == (3, 32, 32) and explained.tolist() == [RED] * 3
    assert maps.min() >= 0 and maps.max() <= 1
    for cam, (red, _, blue) in zip(maps, CASES, strict=True):
        peak = np.unravel_index(cam.argmax(), cam.shape)
        assert _inside(peak, red, 8), (peak, red)
        assert cam[blue[0] : blue[0] + 8, blue[1] : blue[1] + 8].max() < 0.3 * cam.max()

    # asked about green instead, the same images light up where the small green patch is
    maps, explained = gradcam(chain, images, layer="last_conv", classes=np.full(3, GREEN))
    assert explained.tolist() == [GREEN] * 3
    for cam, (_, green, _) in zip(maps, CASES, strict=True):
        peak = np.unravel_index(cam.argmax(), cam.shape)
        assert _inside(peak, green, 4, slack=2), (peak, green)


def test_unknown_layer_is_a_clear_error():
    from tasks.common import UserError

    with pytest.raises(UserError, match="layer 'conv9' not found"):
        gradcam(split(colour_model()), np.zeros((1, 32, 32, 3), "float32"), layer="conv9")


@pytest.mark.slow
def test_gradcam_through_the_nested_resnet50_of_a_project_model():
    model = build_model(num_classes=3, input_size=32, image_size=64)  # conv5: 2x2
    chain = split(model)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    # the split chain is the model: same probabilities, and softmax(logits) gives them back
    probs = np.asarray(model(images, training=False))
    feats = chain.backbone(chain.preprocess(images), training=False)
    np.testing.assert_allclose(np.asarray(chain.head(feats)), probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(keras.ops.softmax(logits(chain, feats))), probs, rtol=1e-5, atol=1e-6
    )
    maps, explained = gradcam(chain, images, layer="conv5_block3_out")
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()
    assert explained.tolist() == probs.argmax(1).tolist()
    assert maps.min() >= 0 and maps.max() <= 1


def _inside(peak, corner, side, slack=1) -> bool:
    (r, c), (r0, c0) = peak, corner
    return r0 - slack <= r < r0 + side + slack and c0 - slack <= c < c0 + side + slack
