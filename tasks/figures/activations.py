"""Intermediate activations: feature maps of named backbone layers for one image."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from tasks.figures import hide_axes, new_figure
from tasks.figures.network import Chain


def activations(
    chain: Chain, image: np.ndarray, layers: tuple[str, ...] | list[str]
) -> dict[str, np.ndarray]:
    """One (H, W, 3) uint8 image -> {layer: its output (h, w, channels) float32}."""
    outs = chain.taps(list(layers))(chain.preprocess(np.asarray(image)[None]), training=False)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    return {name: np.asarray(o, dtype=np.float32)[0] for name, o in zip(layers, outs, strict=True)}


def strongest_channels(maps: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` channels with the highest mean activation, strongest first."""
    return np.argsort(maps.reshape(-1, maps.shape[-1]).mean(0))[::-1][:n]


def activations_figure(per_model: dict[str, np.ndarray], *, layer: str, channels: int) -> Figure:
    """Rows = models, columns = the same channels of `layer` (the first model's strongest).

    per_model: {model name: (h, w, K) feature maps}. Each tile keeps its own colour scale;
    the caption gives its mean, so a change in size and in pattern both show.
    """
    first = next(iter(per_model.values()))
    picks = strongest_channels(first, min(channels, first.shape[-1]))
    fig = new_figure(1.4 * len(picks) + 1.5, 1.5 * len(per_model) + 0.6)
    axes = fig.subplots(len(per_model), len(picks), squeeze=False)
    for r, (name, maps) in enumerate(per_model.items()):
        for c, k in enumerate(picks):
            ax = axes[r, c]
            hide_axes(ax)
            ax.imshow(maps[..., k], cmap="viridis", interpolation="nearest")
            ax.set_title(f"ch {k}: {maps[..., k].mean():.2f}", fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=8)
    h, w, k = first.shape
    fig.suptitle(f"{layer}: {h}x{w}x{k}, {len(picks)} strongest channels")
    return fig
