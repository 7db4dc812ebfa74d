"""The unfreezing study: accuracy (and held-out recall) against how much of the base trained."""

from __future__ import annotations

from matplotlib.figure import Figure

from tasks.figures import new_figure


def study_figure(points: list[dict], recommended: dict) -> Figure:
    """Test accuracy vs unfrozen top layers (log axis), one line per augment value, each
    point annotated with its trained backbone parameters and the recommended one starred;
    a second panel for the held-out classes' recall when the split has any.

    points: tasks.study rows (unfrozen_layers, trainable_params, augment, accuracy,
    holdout_recall).
    """
    metrics = [("accuracy", "test accuracy")]
    if any(p["holdout_recall"] is not None for p in points):
        metrics.append(("holdout_recall", "held-out classes' recall"))
    fig = new_figure(6.5 * len(metrics), 4.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (key, label) in zip(axes, metrics, strict=True):
        _lines(ax, points, key)
        best = recommended
        if best[key] is not None:
            ax.scatter(
                [max(best["unfrozen_layers"], 1)],
                [best[key]],
                marker="*",
                s=260,
                color="gold",
                edgecolor="black",
                zorder=3,
                label="recommended",
            )
        ax.set_xscale("log")
        ax.set_xlabel("unfrozen top layers of ResNet-50 (log scale)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("unfreezing study: labels give the trained backbone parameters")
    return fig


def _lines(ax, points: list[dict], key: str) -> None:
    """One line per augment value over the points' unfrozen layers, labelled by params."""
    for aug, style in ((False, "o-"), (True, "s--")):
        pts = sorted(
            (p for p in points if p["augment"] is aug and p[key] is not None),
            key=lambda p: p["unfrozen_layers"],
        )
        if not pts:
            continue
        xs = [max(p["unfrozen_layers"], 1) for p in pts]  # log axis: 0 layers drawn at 1
        ax.plot(xs, [p[key] for p in pts], style, label=f"augment {str(aug).lower()}")
        for x, p in zip(xs, pts, strict=True):
            ax.annotate(
                _count(p["trainable_params"]),
                (x, p[key]),
                fontsize=8,
                xytext=(4, -12 if aug else 5),
                textcoords="offset points",
            )
    ticks = sorted({max(p["unfrozen_layers"], 1) for p in points})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()


def _count(n: int) -> str:
    """23,587,712 -> 23.6M; 4,098 -> 4.1k."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)
