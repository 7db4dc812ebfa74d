"""Intermediate activations: feature maps of backbone layers for one image, chosen by name
or by the run's image size (`auto_layers`: at 32 px ResNet-50's conv4 is 2x2, conv5 1x1)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from matplotlib.figure import Figure

from tasks.figures import hide_axes, new_figure
from tasks.figures.network import Chain, conv_layer_names


def activations(
    chain: Chain, image: np.ndarray, layers: tuple[str, ...] | list[str]
) -> dict[str, np.ndarray]:
    """One (H, W, 3) uint8 image -> {layer: its output (h, w, channels) float32}."""
    outs = chain.taps(list(layers))(chain.preprocess(np.asarray(image)[None]), training=False)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    return {name: np.asarray(o, dtype=np.float32)[0] for name, o in zip(layers, outs, strict=True)}


def stage_outputs(chain: Chain) -> list[str]:
    """Per stage (the name's prefix: conv1..conv5), its deepest activation, in order.

    conv1_relu, conv2_block3_out, ..., conv5_block3_out for ResNet-50: what each stage hands on.
    """
    last = {}
    for name in conv_layer_names(chain.backbone):
        if name.endswith(("_out", "_relu")):
            last[name.split("_")[0]] = name  # a later block of the stage replaces an earlier
    return list(last.values())


def auto_layers(
    chain: Chain, image: np.ndarray, *, min_side: int
) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """The stage outputs whose maps are at least `min_side` px for this image, and those too
    small: ({layer: (h, w)} drawn, {layer: (h, w)} too small), both in stage order."""
    sides = {k: v.shape[:2] for k, v in activations(chain, image, stage_outputs(chain)).items()}
    wide = {k: hw for k, hw in sides.items() if min(hw) >= min_side}
    return wide, {k: hw for k, hw in sides.items() if k not in wide}


def strongest_channels(maps: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` channels with the highest mean activation, strongest first."""
    return np.argsort(maps.reshape(-1, maps.shape[-1]).mean(0))[::-1][:n]


def changes(per_model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """|later - earlier| for each consecutive pair of models: {"b - a": (h, w, K)}.

    In report order (source, feature_extraction, fine_tune) that is what each training
    step changed; feature extraction's frozen backbone makes its row exactly zero.
    """
    return {f"{b} - {a}": np.abs(per_model[b] - per_model[a]) for a, b in pairwise(per_model)}


def change_note(per_model: dict[str, np.ndarray], diffs: dict[str, np.ndarray]) -> str:
    """`mean |b - a| = 0.012 (3.1% of the mean activation)`, or `0 everywhere`, per pair."""
    scale = float(np.mean([np.abs(m).mean() for m in per_model.values()]))
    parts = []
    for pair, d in diffs.items():
        if not d.any():
            parts.append(f"{pair}: 0 everywhere (no layer up to here trained)")
        else:
            share = f" ({d.mean() / scale:.1%} of the mean activation)" if scale else ""
            parts.append(f"mean |{pair}| = {d.mean():.3g}{share}")
    return "; ".join(parts)


def activations_figure(
    per_model: dict[str, np.ndarray],
    *,
    layer: str,
    channels: int,
    input_side: int | None = None,
    diffs: dict[str, np.ndarray] | None = None,
) -> Figure:
    """Rows = models, then one |b - a| row per pair that differs; columns = the same
    channels of `layer` (the first model's strongest).

    per_model: {model name: (h, w, K) feature maps}; diffs: `changes(per_model)`. A column
    shares one colour scale (the models' range of that channel; a difference row spans the
    same width from 0), so a change shows as bright as it is large.
    """
    diffs = diffs or {}
    rows = {**per_model, **{f"|{k}|": d for k, d in diffs.items() if d.any()}}
    first = next(iter(per_model.values()))
    picks = strongest_channels(first, min(channels, first.shape[-1]))
    stack = np.stack(list(per_model.values()))  # (M, h, w, K)
    lo, hi = stack.min(axis=(0, 1, 2)), stack.max(axis=(0, 1, 2))  # (K,) per channel
    fig = new_figure(1.4 * len(picks) + 1.5, 1.5 * len(rows) + 0.9)
    axes = fig.subplots(len(rows), len(picks), squeeze=False)
    for r, (name, maps) in enumerate(rows.items()):
        is_diff = name not in per_model
        for c, k in enumerate(picks):
            ax = axes[r, c]
            hide_axes(ax)
            vmin, vmax = (0.0, hi[k] - lo[k]) if is_diff else (lo[k], hi[k])
            ax.imshow(maps[..., k], cmap="viridis", interpolation="nearest", vmin=vmin, vmax=vmax)
            ax.set_title(f"ch {k}: {maps[..., k].mean():.2f}", fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=8)
    h, w, k = first.shape
    at = f" at {input_side} px input" if input_side else ""
    title = f"{layer}: {h}x{w} maps{at}, {len(picks)} strongest of {k} channels"
    note = change_note(per_model, diffs)
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=9)
    return fig
