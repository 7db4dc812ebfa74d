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
) -> np.ndarray:
    """Inputs that maximally activate `filters` of `layer`, viewable: (F, s, s, 3) RGB [0, 1]."""
    return np.stack(
        [
            viewable(v)
            for v in ascend(chain, layer, filters, steps=steps, lr=lr, size=size, seed=seed)
        ]
    )


def ascend(
    chain: Chain,
    layer: str,
    filters: tuple[int, ...] | list[int],
    *,
    steps: int,
    lr: float,
    size: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Gradient ascent on each filter's mean activation: (F, s, s, 3) backbone inputs.

    Starts from small noise in the backbone's input space (caffe BGR, mean subtracted), all
    filters in one batch. Each step's gradient is L2-normalised per image, so `lr` is the
    RMS change per pixel and step in those units (the input spans about -124..152).
    """
    import tensorflow as tf

    tap = chain.taps([layer])
    channels = int(tap.output.shape[-1])
    bad = [f for f in filters if f >= channels]
    if bad:
        raise ValueError(f"{layer} has {channels} channels; filters {bad} do not exist")
    shape = chain.backbone.input_shape
    side = shape[1] if shape[1] else size
    rng = np.random.default_rng(seed)
    x = tf.Variable(rng.uniform(-20, 20, (len(filters), side, side, 3)).astype("float32"))
    onehot = tf.one_hot(list(filters), channels)  # (F, K): filter f for batch row f
    scale = lr * float(np.sqrt(side * side * 3))  # unit L2 norm per image -> RMS of `lr`

    @tf.function  # one traced graph for all steps: several times faster than eager on CPU
    def step() -> None:
        with tf.GradientTape() as tape:
            act = tf.cast(tap(x, training=False), tf.float32)  # (F, h, w, K)
            loss = tf.reduce_sum(tf.reduce_mean(act, axis=(1, 2)) * onehot)
        g = tape.gradient(loss, x)
        g /= tf.norm(tf.reshape(g, (len(filters), -1)), axis=1)[:, None, None, None] + 1e-8
        x.assign_add(scale * g)

    for _ in range(steps):
        step()
    return x.numpy()


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
