"""Reliability diagrams: how often each model is right at each stated confidence, before and
after temperature scaling (evaluate's details/<model>/reliability.json)."""

from __future__ import annotations

from matplotlib.figure import Figure

from tasks.figures import new_figure


def reliability_figure(models: dict[str, dict]) -> Figure:
    """One panel per model: accuracy against mean confidence per bin, raw and calibrated,
    on the diagonal of perfect calibration; bar widths are the bins, the number over a
    raw bin is how many test images fell in it.

    models: {name: {"temperature": T, "raw": [bin rows], "calibrated": [bin rows],
    "ece": float, "ece_calibrated": float}} (bin rows: tasks.calibration.reliability).
    """
    fig = new_figure(4.2 * max(1, len(models)), 4.0)
    axes = fig.subplots(1, max(1, len(models)), squeeze=False)[0]
    for ax, (name, r) in zip(axes, models.items(), strict=False):
        ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="perfectly calibrated")
        raw = r["raw"]
        ax.bar(
            [b["lo"] for b in raw],
            [b["accuracy"] for b in raw],
            width=[b["hi"] - b["lo"] for b in raw],
            align="edge",
            color="tab:blue",
            alpha=0.25,
            edgecolor="tab:blue",
        )
        for b in raw:
            ax.annotate(
                str(b["count"]),
                ((b["lo"] + b["hi"]) / 2, b["accuracy"]),
                ha="center",
                va="bottom",
                fontsize=6,
                color="tab:blue",
            )
        for key, style, color, ece in (
            ("raw", "-o", "tab:blue", r.get("ece")),
            ("calibrated", "-s", "tab:orange", r.get("ece_calibrated")),
        ):
            pts = r[key]
            label = key if key == "raw" else f"T = {r['temperature']:.2f}"
            if ece is not None:
                label += f" (ECE {ece:.3f})"
            ax.plot(
                [b["confidence"] for b in pts],
                [b["accuracy"] for b in pts],
                style,
                ms=3,
                color=color,
                label=label,
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    return fig
