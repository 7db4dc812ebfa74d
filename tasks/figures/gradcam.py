"""Grad-CAM (Selvaraju et al. 2017): where in the image the evidence for a class lies.

    heatmap = ReLU(sum_k a_k * A_k),  a_k = mean over (i, j) of d logit_c / d A_k[i, j]

with A the output of a conv layer taken by name, inside the nested backbone for the
project's models. Compute (`gradcam`) is apart from drawing (`gradcam_figure`).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from tasks.figures import hide_axes, new_figure
from tasks.figures.network import Chain


def logits(chain: Chain, features):
    """The head's pre-softmax scores: the last layer's softmax is skipped, not inverted.

    Gradients of a saturated softmax probability vanish (p = 1.0 in float32 gives a zero
    map); the logit keeps the direction of the evidence.
    """
    import keras

    *body, last = chain.after
    x = features
    for layer in body:
        x = layer(x, training=False)
    activation = getattr(last, "activation", None)
    if isinstance(last, keras.layers.Dense) and activation is keras.activations.softmax:
        return keras.ops.matmul(x, last.kernel) + (last.bias if last.use_bias else 0.0)
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and activation is keras.activations.softmax
    ):
        return x
    return keras.ops.log(last(x, training=False) + 1e-12)  # unknown head: log-probabilities


def gradcam(
    chain: Chain, images: np.ndarray, *, layer: str, classes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(B, S, S, 3) uint8 -> (heatmaps (B, S, S) in [0, 1], explained class per image).

    `classes` = the class to explain per image; default the predicted one.
    """
    import tensorflow as tf

    inner = chain.taps([layer], features=True)
    x = chain.preprocess(np.asarray(images))
    with tf.GradientTape() as tape:
        conv, features = inner(x, training=False)  # conv: (B, h, w, K)
        scores = tf.cast(logits(chain, features), tf.float32)  # (B, C)
        if classes is None:
            classes = np.asarray(tf.argmax(scores, axis=-1))
        chosen = tf.gather(scores, np.asarray(classes), axis=1, batch_dims=1)  # (B,)
    grads = tf.cast(tape.gradient(chosen, conv), tf.float32)  # (B, h, w, K)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (B, 1, 1, K)
    cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(conv, tf.float32), axis=-1))  # (B, h, w)
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    cam = tf.math.divide_no_nan(cam, peak)
    size = np.asarray(images).shape[1:3]
    cam = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]
    return np.clip(np.asarray(cam), 0.0, 1.0), np.asarray(classes)


def gradcam_figure(
    images: np.ndarray,
    heatmaps: np.ndarray,
    titles: list[str],
    *,
    title: str = "Grad-CAM",
    cols: int = 4,
) -> Figure:
    """Each image with its heatmap overlaid (jet, 45 % opacity) and a caption."""
    n = len(images)
    rows = max(1, -(-n // cols))
    fig = new_figure(2.3 * cols, 2.5 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        hide_axes(ax)
    for ax, img, cam, caption in zip(axes, images, heatmaps, titles, strict=False):
        ax.imshow(img, interpolation="nearest")
        ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title)
    return fig
