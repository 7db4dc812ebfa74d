"""What training changed in the backbone, stage by stage, at any image size.

Per conv layer, the relative weight change ||W_b - W_a|| / ||W_a||; per stage output, how
far the test images' representation moved: 1 - the mean cosine similarity of the two
models' spatially pooled outputs. At 32 px ResNet-50's conv4 is 2x2 and conv5 1x1, too
small to draw as feature maps, but what fine-tuning did to them is measured all the same.
"""

from __future__ import annotations

from itertools import pairwise

import keras
import numpy as np
from matplotlib.figure import Figure

from tasks.figures import new_figure
from tasks.figures.network import Chain

STAGE_COLOURS = ("#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974")


def weight_changes(a: Chain, b: Chain) -> dict[str, float]:
    """{conv layer: ||W_b - W_a|| / ||W_a||} over the backbone's Conv2D kernels, in order."""
    out = {}
    for layer in a.backbone.layers:
        if isinstance(layer, keras.layers.Conv2D):
            wa = np.asarray(layer.kernel)
            wb = np.asarray(b.layer(layer.name).kernel)
            out[layer.name] = float(np.linalg.norm(wb - wa) / (np.linalg.norm(wa) or 1.0))
    return out


def representation_changes(
    a: Chain, b: Chain, images: np.ndarray, stages: list[str]
) -> dict[str, float]:
    """{stage output: 1 - mean cosine similarity of a's and b's pooled outputs on images}."""
    pa, pb = _pooled(a, images, stages), _pooled(b, images, stages)
    out = {}
    for name, xa, xb in zip(stages, pa, pb, strict=True):
        norms = np.linalg.norm(xa, axis=1) * np.linalg.norm(xb, axis=1)
        cos = (xa * xb).sum(axis=1) / np.maximum(norms, 1e-12)
        out[name] = max(0.0, float(1.0 - cos.mean()))
    return out


def _pooled(chain: Chain, images: np.ndarray, stages: list[str]) -> list[np.ndarray]:
    outs = chain.taps(stages)(chain.preprocess(np.asarray(images)), training=False)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    return [np.asarray(o, dtype=np.float64).mean(axis=(1, 2)) for o in outs]  # (N, C) each


def pair_changes(
    chains: dict[str, Chain], images: np.ndarray, stages: list[str]
) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """{"b - a": (weight changes, representation changes)} per consecutive pair of models."""
    return {
        f"{b} - {a}": (
            weight_changes(chains[a], chains[b]),
            representation_changes(chains[a], chains[b], images, stages),
        )
        for a, b in pairwise(chains)
    }


def change_note(changes: dict[str, tuple[dict[str, float], dict[str, float]]]) -> str:
    """Per pair: `frozen (no weight changed)`, or the stages that moved and by how much."""
    parts = []
    for pair, (weights, reps) in changes.items():
        moved = sorted({_stage(n) for n, v in weights.items() if v > 0}, key=_stage_order)
        if not moved:
            parts.append(f"{pair}: no backbone weight changed (frozen)")
            continue
        top = max(weights, key=weights.get)
        deepest = list(reps)[-1]
        parts.append(
            f"{pair}: weights of {', '.join(moved)} changed (most: {top}, "
            f"{weights[top]:.2%}); the {deepest} output moved {reps[deepest]:.3f} (1 - cos)"
        )
    return "; ".join(parts)


def changes_figure(changes: dict[str, tuple[dict[str, float], dict[str, float]]]) -> Figure:
    """One row per pair: weight change per conv layer (coloured by stage), and the
    representation change per stage output."""
    fig = new_figure(12, 2.8 * len(changes) + 0.4)
    axes = fig.subplots(len(changes), 2, squeeze=False, width_ratios=(3, 1))
    for (pair, (weights, reps)), (left, right) in zip(changes.items(), axes, strict=True):
        names = list(weights)
        stages = [_stage(n) for n in names]
        order = sorted(set(stages), key=_stage_order)
        colours = [STAGE_COLOURS[order.index(s) % len(STAGE_COLOURS)] for s in stages]
        left.bar(range(len(names)), [100 * weights[n] for n in names], color=colours, width=0.9)
        for s in order:  # a line before the stage's first layer, its name over its middle
            first, count = stages.index(s), stages.count(s)
            left.axvline(first - 0.5, color="0.85", lw=0.8, zorder=0)
            left.text(
                first + (count - 1) / 2,
                1.0,
                s,
                transform=left.get_xaxis_transform(),
                va="bottom",
                ha="center",
                fontsize=8,
            )
        left.set_xlim(-0.5, len(names) - 0.5)
        left.set_xticks([])
        left.set_ylabel("weight change, %")
        left.set_title(f"{pair}: ||dW|| / ||W|| per conv layer", fontsize=9, loc="left", pad=12)
        labels = [_stage(n) for n in reps]
        right.bar(
            labels,
            list(reps.values()),
            color=[STAGE_COLOURS[i % len(STAGE_COLOURS)] for i in range(len(reps))],
        )
        right.set_ylabel("1 - cosine similarity")
        right.set_title("representation change per stage", fontsize=9, loc="left", pad=12)
        if not any(weights.values()):
            for ax in (left, right):
                ax.text(
                    0.5,
                    0.5,
                    "frozen: nothing changed",
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                    color="0.4",
                )
                ax.set_ylim(0, 1)
    return fig


def _stage(layer: str) -> str:
    return layer.split("_")[0]


def _stage_order(stage: str) -> tuple[int, str]:
    digits = "".join(c for c in stage if c.isdigit())
    return (int(digits) if digits else 99, stage)
