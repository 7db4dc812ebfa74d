"""Learning curves (both phases on one epoch axis) and the strategy / sweep comparison."""

from __future__ import annotations

from matplotlib.figure import Figure

from tasks.figures import new_figure


def curve_rows(history: dict) -> list[dict]:
    """history.json -> one row per epoch with a run-wide `step` (1..) and its `phase`."""
    rows, step = [], 0
    for phase in history.get("phases", []):
        for e in phase.get("epochs", []):
            step += 1
            rows.append({"step": step, "phase": phase.get("name", "?"), **e})
    return rows


def learning_curves_figure(history: dict, *, title: str = "") -> Figure:
    """Loss and accuracy, train vs val, over every epoch of every phase; boundaries marked."""
    rows = curve_rows(history)
    fig = new_figure(10, 3.6)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--s")):
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot(
                    *zip(*pts, strict=True), style, ms=3, label="train" if key == metric else "val"
                )
        for i in range(1, len(rows)):
            if rows[i]["phase"] != rows[i - 1]["phase"]:
                ax.axvline(rows[i]["step"] - 0.5, color="gray", ls=":")
                ax.annotate(
                    rows[i]["phase"],
                    (rows[i]["step"] - 0.5, 1),
                    xycoords=("data", "axes fraction"),
                    ha="left",
                    va="top",
                    fontsize=8,
                    color="gray",
                )
        ax.set_xlabel("epoch (all phases)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        if rows:
            ax.text(
                0.01,
                0.99,
                rows[0]["phase"],
                transform=ax.transAxes,
                ha="left",
                va="top",
                fontsize=8,
                color="gray",
            )
    fig.suptitle(title or "learning curves")
    return fig


def comparison_figure(rows: list[dict]) -> Figure:
    """Test accuracy per model, then against unfrozen layers and trainable backbone
    parameters, with and without augmentation (the unfreezing sweep).

    rows: `evaluate.comparison_row`s (model, accuracy, unfrozen_layers, trainable_params,
    augmentation, ...); numbers may be None when a model has no train.json.
    """
    fig = new_figure(15, 3.8)
    bars, by_layers, by_params = fig.subplots(1, 3)
    names = [r["model"] for r in rows]
    bars.barh(names, [r["accuracy"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        bars.annotate(f"{r['accuracy']:.3f}", (r["accuracy"], i), va="center", fontsize=8)
    bars.set_xlim(0, 1.1)
    bars.set_xlabel("test accuracy")
    bars.invert_yaxis()
    _sweep_scatter(by_layers, rows, "unfrozen_layers", "unfrozen backbone layers with weights")
    _sweep_scatter(by_params, rows, "trainable_params", "trainable backbone parameters")
    fig.suptitle("strategies and unfreezing sweep (0 unfrozen = feature extraction)")
    return fig


def _sweep_scatter(ax, rows: list[dict], key: str, label: str) -> None:
    """Accuracy against `key`, one marker per augmentation setting, points labelled."""
    for aug, marker in (("yes", "o"), ("no", "s"), ("?", "^")):
        pts = [r for r in rows if r.get("augmentation", "?") == aug and r.get(key) is not None]
        if not pts:
            continue
        ax.scatter(
            [r[key] for r in pts],
            [r["accuracy"] for r in pts],
            marker=marker,
            label=f"augmentation {aug}",
        )
        for r in pts:
            ax.annotate(
                r["model"],
                (r[key], r["accuracy"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    if ax.collections:
        ax.set_xscale("symlog")
        ax.legend(fontsize=8)
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
