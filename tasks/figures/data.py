"""Data figures: random samples per class (EDA) and what the network really sees."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from tasks.figures import hide_axes, mosaic, new_figure


def samples_figure(
    images: np.ndarray, labels: np.ndarray, classes: list[str], *, per_class: int, seed: int = 0
) -> Figure:
    """A grid: one row per class, `per_class` random images of it (fewer if it has fewer).

    images (N, H, W, 3) uint8 (a memmap is fine: only the drawn rows are read).
    """
    rng = np.random.default_rng(seed)
    size = images.shape[1]
    tiles = np.ones((len(classes) * per_class, size, size, 3), np.float32)  # white = none
    counts = []
    for c in range(len(classes)):
        members = np.flatnonzero(labels == c)
        counts.append(len(members))
        pick = np.sort(rng.choice(members, min(per_class, len(members)), replace=False))
        tiles[c * per_class : c * per_class + len(pick)] = np.asarray(images[pick]) / 255.0
    pad = max(1, size // 16)
    fig = new_figure(1.0 * per_class + 1.4, 1.0 * len(classes) + 0.6)
    ax = fig.subplots()
    ax.imshow(mosaic(tiles, per_class, pad=pad), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks(
        [c * (size + pad) + size / 2 for c in range(len(classes))],
        [f"{name} ({n})" for name, n in zip(classes, counts, strict=True)],
        fontsize=9,
    )
    for side in ax.spines.values():
        side.set_visible(False)
    ax.tick_params(length=0)
    fig.suptitle(f"{per_class} random images per class (count in the split)")
    return fig


def preprocessing_figure(original: np.ndarray, seen: np.ndarray, *, label: str = "") -> Figure:
    """The stored uint8 image beside the backbone's input after resize + mean subtraction.

    seen: (s, s, 3) RGB in [0, 1], from `network.viewable` (stretched to be visible).
    """
    fig = new_figure(6.5, 3.4)
    a, b = fig.subplots(1, 2)
    a.imshow(original, interpolation="nearest")
    a.set_title(
        f"stored {original.shape[0]}x{original.shape[1]} uint8" + (f"\n{label}" if label else ""),
        fontsize=9,
    )
    b.imshow(seen, interpolation="nearest")
    b.set_title(
        f"network input {seen.shape[0]}x{seen.shape[1]}\n(BGR mean-subtracted, shown stretched)",
        fontsize=9,
    )
    hide_axes(a)
    hide_axes(b)
    return fig
