"""Figure builders, one module per family: data, curves, activations, filters, gradcam, errors.

Every builder returns a `matplotlib.figure.Figure` and touches no disk and no display: it
never goes through pyplot, so no GUI backend or global figure state is involved. `save`
is the one writer.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from tasks.common import atomic_path


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure (Agg canvas when saved); sizes in inches, capped for huge grids."""
    return Figure(figsize=(min(width, 24.0), min(height, 40.0)), layout="constrained")


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Write `fig` as a PNG atomically; returns the path."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(png_bytes(fig, dpi))
    return Path(path)


def hide_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def mosaic(tiles, cols: int, pad: int = 1, fill: float = 1.0):
    """(n, h, w, 3) tiles -> one (rows*(h+pad), cols*(w+pad), 3) image, row-major.

    One imshow of a mosaic draws and saves far faster than one axes per tile.
    """
    import numpy as np

    tiles = np.asarray(tiles, dtype=np.float32)
    n, h, w, c = tiles.shape
    rows = max(1, -(-n // cols))
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), fill, np.float32)
    for k in range(n):
        r, q = divmod(k, cols)
        out[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = tiles[k]
    return out
