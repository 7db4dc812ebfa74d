"""Convolution filters: first-layer kernels as RGB tiles, and deeper filters' preferred
inputs found by gradient ascent."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from matplotlib.figure import Figure

from tasks.figures import hide_axes, mosaic, new_figure
from tasks.figures.network import Chain, viewable


def kernels(chain: Chain, layer: str) -> np.ndarray:
    """The conv layer's kernels as (n, kh, kw, 3) RGB tiles in [0, 1], each stretched alone."""
    k = rgb_kernels(chain, layer)
    lo = k.min(axis=(1, 2, 3), keepdims=True)
    hi = k.max(axis=(1, 2, 3), keepdims=True)
    return (k - lo) / np.where(hi > lo, hi - lo, 1.0)


def rgb_kernels(chain: Chain, layer: str) -> np.ndarray:
    """The conv layer's raw kernels as (n, kh, kw, 3), input channels in RGB order.

    Kernels act on the caffe-preprocessed BGR input, so channels are flipped back to RGB.
    """
    weights = chain.layer(layer).get_weights()
    if not weights or weights[0].ndim != 4 or weights[0].shape[2] != 3:
        raise ValueError(f"{layer}: not a conv layer over 3 input channels")
    return np.moveaxis(weights[0], -1, 0)[..., ::-1]  # (n, kh, kw, 3) RGB


def kernel_changes(chains: dict[str, Chain], layer: str) -> dict[str, np.ndarray]:
    """later - earlier kernels of `layer` for each consecutive pair of models:
    {"b - a": (n, kh, kw, 3)} in weight units; all zero where the layer stayed frozen."""
    return {
        f"{b} - {a}": rgb_kernels(chains[b], layer) - rgb_kernels(chains[a], layer)
        for a, b in pairwise(chains)
    }


def change_tiles(delta: np.ndarray) -> np.ndarray:
    """Signed kernel changes -> [0, 1] RGB tiles: 0.5 grey = unchanged, one scale for all."""
    peak = float(np.abs(delta).max())
    return 0.5 + delta / (2 * peak) if peak > 0 else np.full_like(delta, 0.5)


def kernel_change_note(changes: dict[str, np.ndarray], layer: str) -> str:
    """Per pair: `frozen (weights identical)`, or the largest and mean |change|."""
    return "; ".join(
        f"{pair}: max |dw| {np.abs(d).max():.3g}, mean {np.abs(d).mean():.3g}"
        if d.any()
        else f"{pair}: {layer} frozen (weights identical)"
        for pair, d in changes.items()
    )


def kernels_figure(
    per_model: dict[str, np.ndarray],
    *,
    layer: str,
    cols: int = 16,
    changes: dict[str, np.ndarray] | None = None,
) -> Figure:
    """One mosaic per model (side by side), each the grid of its kernels, then one of each
    change that is not zero (`kernel_changes`: grey = unchanged, one scale per mosaic)."""
    changes = changes or {}
    panels = {**per_model, **{p: change_tiles(d) for p, d in changes.items() if d.any()}}
    n = len(next(iter(per_model.values())))
    c = min(cols, n)
    r = -(-n // c)
    fig = new_figure(4.2 * len(panels), 4.2 * r / c + 1.0)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (name, tiles) in zip(axes, panels.items(), strict=True):
        hide_axes(ax)
        ax.imshow(mosaic(tiles, c), interpolation="nearest")
        ax.set_title(name, fontsize=9)
    note = kernel_change_note(changes, layer)
    fig.suptitle(
        f"{layer} kernels (RGB, each stretched to its own range)" + (f"\n{note}" if note else ""),
        fontsize=9,
    )
    return fig


def preferred_inputs(
    chain: Chain,
    layer: str,
    filters: tuple[int, ...] | list[int],
    *,
    steps: int,
    lr: float,
    size: int = 64,
    seed: int = 0,
    jitter: int = 2,
    decay: float = 0.0,
) -> np.ndarray:
    """Inputs that maximally activate `filters` of `layer`, viewable: (F, s, s, 3) RGB [0, 1]."""
    x = ascend(
        chain, layer, filters, steps=steps, lr=lr, size=size, seed=seed, jitter=jitter, decay=decay
    )
    return np.stack([viewable(v) for v in x])


# Lucid's colour decorrelation: the square root of ImageNet's RGB covariance (its SVD), so
# one optimised channel moves the colours natural images vary together in.
COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], "float32")
COLOR_SQRT /= np.linalg.norm(COLOR_SQRT, axis=0).max()


def frequency_scale(side: int) -> np.ndarray:
    """(side, side // 2 + 1) weights of an rfft2 spectrum: 1 / frequency (cycles per image).

    Optimising scaled coefficients gives every frequency the same step, as natural images'
    1/f amplitude has it, instead of the flat spectrum of per-pixel steps (that is noise).
    """
    fy = np.fft.fftfreq(side)[:, None]
    fx = np.fft.rfftfreq(side)[None, :]
    return (1.0 / np.maximum(np.hypot(fx, fy), 1.0 / side)).astype("float32")


def ascend(
    chain: Chain,
    layer: str,
    filters: tuple[int, ...] | list[int],
    *,
    steps: int,
    lr: float,
    size: int = 64,
    seed: int = 0,
    jitter: int = 2,
    decay: float = 0.0,
) -> np.ndarray:
    """Regularised gradient ascent on each filter's mean activation: (F, s, s, 3) backbone
    inputs (caffe BGR), all filters in one batch, at the backbone's input side.

    As in Lucid / keras-io: the image is a 1/f-scaled, colour-decorrelated Fourier spectrum
    through a sigmoid (so pixels stay in 0..255); each step shifts it by up to `jitter` px
    (patterns that survive a shift are not pixel noise); `decay` is an L2 penalty on the
    RGB image's distance from grey; Adam steps the spectrum at rate `lr`.
    """
    import keras
    import tensorflow as tf

    from tasks.model import ResNetPreprocess

    tap = chain.taps([layer])
    channels = int(tap.output.shape[-1])
    bad = [f for f in filters if f >= channels]
    if bad:
        raise ValueError(f"{layer} has {channels} channels; filters {bad} do not exist")
    shape = chain.backbone.input_shape
    side, n = (shape[1] if shape[1] else size), len(filters)
    rng = np.random.default_rng(seed)
    spectrum = tf.Variable(rng.normal(0, 0.01, (n, 3, side, side // 2 + 1, 2)).astype("float32"))
    scale = tf.constant(frequency_scale(side))
    onehot = tf.one_hot(list(filters), channels)  # (F, K): filter f for batch row f
    shifts = tf.random.Generator.from_seed(seed)
    to_caffe = ResNetPreprocess()
    opt = keras.optimizers.Adam(lr)

    def rgb():  # (F, s, s, 3) in [0, 1]
        coeffs = tf.complex(spectrum[..., 0], spectrum[..., 1]) * tf.complex(scale, 0.0)
        planes = tf.signal.irfft2d(coeffs, fft_length=[side, side])  # (F, 3, s, s)
        return tf.sigmoid(tf.transpose(planes, (0, 2, 3, 1)) @ COLOR_SQRT.T)

    @tf.function  # one traced graph for all steps: several times faster than eager on CPU
    def step() -> None:
        with tf.GradientTape() as tape:
            img = rgb()
            dy, dx = tf.unstack(shifts.uniform([2], -jitter, jitter + 1, tf.int32))
            x = tf.roll(to_caffe(255.0 * img), (dy, dx), axis=(1, 2))
            act = tf.cast(tap(x, training=False), tf.float32)  # (F, h, w, K)
            gain = tf.reduce_sum(tf.reduce_mean(act, axis=(1, 2)) * onehot)
            loss = decay * tf.reduce_sum(tf.square(img - 0.5)) - gain
        opt.apply_gradients([(tape.gradient(loss, spectrum), spectrum)])

    for _ in range(steps):
        step()
    return np.asarray(to_caffe(255.0 * rgb()))


def preferred_inputs_figure(
    per_model: dict[str, np.ndarray], *, layer: str, filters: tuple[int, ...] | list[int]
) -> Figure:
    """Rows = models, columns = filters."""
    fig = new_figure(1.8 * len(filters) + 1.5, 1.9 * len(per_model) + 0.5)
    axes = fig.subplots(len(per_model), len(filters), squeeze=False)
    for r, (name, imgs) in enumerate(per_model.items()):
        for c, f in enumerate(filters):
            hide_axes(axes[r, c])
            axes[r, c].imshow(imgs[c], interpolation="bilinear")
            axes[r, c].set_title(f"filter {f}", fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"{layer}: inputs that maximally activate chosen filters")
    return fig
