"""The audit's pictures: near-duplicate pairs side by side, label suspects with both labels.

Builders return a Figure (tasks.figures.new_figure: no pyplot state); the stage saves them.
`image(split, idx)` returns one (H, W, 3) uint8 image, so nothing big is loaded here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tasks.figures import hide_axes, new_figure

ImageOf = Callable[[str, int], np.ndarray]


def pairs_figure(
    pairs: pd.DataFrame, image: ImageOf, *, classes_of: Callable, shown: int, per_row: int = 4
) -> Figure:
    """The `shown` most similar cross-split pairs: earlier split left, later split right."""
    rows = pairs.head(shown)
    n_rows = max(1, -(-len(rows) // per_row))
    fig = new_figure(2.4 * per_row, 1.6 * n_rows + 0.4)
    axes = fig.subplots(n_rows, 2 * per_row, squeeze=False)
    for ax in axes.flat:
        hide_axes(ax)
    if rows.empty:
        axes[0, 0].set_title("no near-duplicates across splits", loc="left", fontsize=9)
    for k, r in enumerate(rows.itertuples(index=False)):
        left, right = (
            axes[k // per_row, 2 * (k % per_row)],
            axes[k // per_row, 2 * (k % per_row) + 1],
        )
        left.imshow(image(r.split_a, r.idx_a), interpolation="nearest")
        right.imshow(image(r.split_b, r.idx_b), interpolation="nearest")
        left.set_title(f"{r.split_a} #{r.idx_a}\n{classes_of(r.split_a, r.idx_a)}", fontsize=7)
        score = f"cos {r.similarity:.3f}" if not np.isnan(r.similarity) else "cos -"
        ham = f"dhash {r.hamming}" if r.hamming >= 0 else ""
        right.set_title(
            f"{r.split_b} #{r.idx_b}\n{classes_of(r.split_b, r.idx_b)} {score} {ham}", fontsize=7
        )
    fig.suptitle(f"near-duplicates across splits: {len(pairs)} (top {len(rows)} shown)")
    return fig


def suspects_figure(suspects: pd.DataFrame, image: ImageOf, *, cols: int = 8) -> Figure:
    """Label-issue candidates: the image, its given label and the suggested one."""
    n_rows = max(1, -(-len(suspects) // cols))
    fig = new_figure(1.4 * cols, 1.6 * n_rows + 0.4)
    axes = fig.subplots(n_rows, cols, squeeze=False)
    for ax in axes.flat:
        hide_axes(ax)
    if suspects.empty:
        axes[0, 0].set_title("no label-issue candidates", loc="left", fontsize=9)
    for ax, r in zip(axes.flat, suspects.itertuples(index=False), strict=False):
        ax.imshow(image(r.split, r.idx), interpolation="nearest")
        title = f"{r.split} #{r.idx}\ngiven {r.given} -> {r.suggested}"
        ax.set_title(f"{title}\np(given) {r.self_confidence:.2f}", fontsize=6)
    fig.suptitle(f"label-issue candidates: {len(suspects)} shown")
    return fig
