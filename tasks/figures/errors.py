"""Error analysis: confusion heatmap, most confidently wrong images, confused class pairs."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from tasks.figures import hide_axes, new_figure


def confusion_figure(cm: np.ndarray, classes: list[str], *, title: str = "") -> Figure:
    """Rows = true class, columns = predicted; colour = row-normalised rate, text = count
    and rate (each row sums to that class's support)."""
    cm = np.asarray(cm)
    support = cm.sum(axis=1, keepdims=True)
    rates = np.divide(cm, support, out=np.zeros(cm.shape, float), where=support > 0)
    n = len(classes)
    side = max(4.0, 0.55 * n + 2)
    fig = new_figure(side + 1, side)
    ax = fig.subplots()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:  # beyond that the text would be unreadable; the colour still shows
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{cm[i, j]}\n{rates[i, j]:.0%}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black",
                    )
    ticks = range(n) if n <= 60 else []
    ax.set_xticks(list(ticks), [classes[i] for i in ticks], rotation=90, fontsize=8)
    ax.set_yticks(list(ticks), [f"{classes[i]} ({support[i, 0]})" for i in ticks], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (support)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    ax.set_title(title or "confusion matrix")
    return fig


def image_grid(
    images: list[np.ndarray],
    captions: list[str],
    *,
    title: str,
    cols: int = 8,
    colors: list[str] | None = None,
) -> Figure:
    """A plain captioned image grid (an empty grid says so)."""
    n = max(1, len(images))
    cols = min(cols, n)
    rows = -(-n // cols)
    fig = new_figure(1.7 * cols, 1.9 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        hide_axes(ax)
    if not images:
        axes[0].text(0.5, 0.5, "none", ha="center", va="center")
    for k, (ax, img, cap) in enumerate(zip(axes, images, captions, strict=False)):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(cap, fontsize=7, color=(colors[k] if colors else "black"))
    fig.suptitle(title)
    return fig


def misclassified_figure(
    images: np.ndarray,
    true: np.ndarray,
    pred: np.ndarray,
    confidence: np.ndarray,
    classes: list[str],
    *,
    title: str = "",
) -> Figure:
    """The given wrong images (most confident first) with true -> predicted and confidence."""
    caps = [
        f"true {classes[t]}\npred {classes[p]} {c:.0%}"
        for t, p, c in zip(true, pred, confidence, strict=True)
    ]
    return image_grid(
        list(images),
        caps,
        colors=["firebrick"] * len(caps),
        title=title or "most confidently wrong test images",
    )


def pairs_figure(
    pairs: list[dict], examples: list[tuple[np.ndarray, list[str]]], *, title: str = ""
) -> Figure:
    """One row per confused pair: its example images (both directions) with captions.

    pairs: `evaluate.confused_pairs` rows; examples: per pair (images, captions).
    """
    rows = max(1, len(pairs))
    cols = max([len(imgs) for imgs, _ in examples] + [1])
    fig = new_figure(1.7 * cols + 1.8, 1.9 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        hide_axes(ax)
    for r, (pair, (imgs, caps)) in enumerate(zip(pairs, examples, strict=True)):
        for c, (img, cap) in enumerate(zip(imgs, caps, strict=True)):
            axes[r, c].imshow(img, interpolation="nearest")
            axes[r, c].set_title(cap, fontsize=7)
        axes[r, 0].set_ylabel(
            f"{pair['a']} / {pair['b']}\n{pair['total']} errors",
            rotation=0,
            ha="right",
            va="center",
            fontsize=8,
        )
    if not pairs:
        axes[0, 0].text(0.5, 0.5, "no confusions", ha="center", va="center")
    fig.suptitle(title or "most confused class pairs (class leakage)")
    return fig
