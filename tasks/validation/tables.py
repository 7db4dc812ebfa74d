"""The tables the suites validate, computed from a prepared dataset with numpy alone.

    images   one row per image: index.csv joined (outer, on split + idx) with what the arrays
             hold, so an image without an index row, or the reverse, shows up as nulls
    classes  one row per (split, class): how many images, and the share of the split's
             largest class; every class of classes.json in every split, missing ones as 0
    splits   one row per split: images, unreadable files (quarantine.csv) and their share

Pixels are read from the memory-mapped arrays a few MiB at a time, in their own dtype: no
float copy of the dataset is ever made (CIFAR-10, 60,000 images, stays well under 1 GiB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.common import UserError
from tasks.dataset import SPLITS, Prepared

STATS_BYTES = 32 << 20  # pixels reduced per step: bounds memory at any image size
TABLES = ("images", "classes", "splits")


def build_tables(prepared: Prepared, *, splits: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """All three tables; `splits` are the splits that must exist (missing ones count 0)."""
    classes = read_classes(prepared)
    images = image_table(prepared, classes)
    present = [s for s in SPLITS if s in set(splits) | set(images.split.dropna())]
    if "sha256" in images:  # copies of one image side by side: a leak's examples show each
        images = images.sort_values(["sha256", "split", "idx"], ignore_index=True)
    return {
        "images": images,
        "classes": class_table(images, classes, present),
        "splits": split_table(images, prepared.quarantine(), present),
    }


def read_classes(prepared: Prepared) -> list[str]:
    classes = prepared.info.get("classes")
    if not isinstance(classes, list) or not classes:
        raise UserError(f"{prepared.root}/dataset.json: no list of classes; run prepare again")
    return [str(c) for c in classes]


def image_table(prepared: Prepared, classes: list[str]) -> pd.DataFrame:
    """One row per image (and per index row): the index columns plus geometry and pixels."""
    parts = []
    for split in SPLITS:
        if not (prepared.root / split / "images.npy").is_file():
            continue
        images = _load(prepared.root / split / "images.npy", mmap=True)
        labels = _load(prepared.root / split / "labels.npy", mmap=False)
        arrays = pd.DataFrame(
            {"split": split, "idx": np.arange(len(images))} | geometry(images) | pixel_stats(images)
        )
        labeled = pd.DataFrame({"split": split, "idx": np.arange(len(labels)), "label": labels})
        parts.append(arrays.merge(labeled, on=["split", "idx"], how="outer"))
    if not parts:
        raise UserError(f"{prepared.root}: no <split>/images.npy at all; run prepare again")
    arrays = pd.concat(parts, ignore_index=True)
    index = prepared.index().rename(columns={"label": "index_label"})
    table = arrays.merge(index, on=["split", "idx"], how="outer", sort=False)
    names = dict(enumerate(classes))  # an out-of-range label has no name (None), not a crash
    table["label_name"] = [names.get(x) if _is_int(x) else None for x in table["label"]]
    if "sha256" in table:  # in how many splits each image appears: > 1 is leakage
        table["hash_splits"] = table.groupby("sha256")["split"].transform("nunique")
    return table


def geometry(images: np.ndarray) -> dict[str, object]:
    """Shape and dtype columns for a (N, H, W, C) or (N, H, W) array (same on every row)."""
    if images.ndim not in (3, 4):
        raise UserError(f"images.npy has shape {images.shape}; expected (N, H, W, 3)")
    h, w = images.shape[1:3]
    c = images.shape[3] if images.ndim == 4 else 1
    return {
        "height": h,
        "width": w,
        "channels": c,
        "shape": f"{h}x{w}x{c}",
        "dtype": str(images.dtype),
    }


def pixel_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image min, max, range (max - min) and mean of all pixels, chunk by chunk."""
    n = len(images)
    per_image = max(1, int(np.prod(images.shape[1:])) * images.dtype.itemsize)
    step = max(1, STATS_BYTES // per_image)
    lo, hi, mean = np.zeros(n), np.zeros(n), np.zeros(n)
    for s in range(0, n, step):
        flat = np.asarray(images[s : s + step]).reshape(min(step, n - s), -1)  # (n, H*W*C)
        lo[s : s + step] = flat.min(axis=1) if flat.shape[1] else np.nan
        hi[s : s + step] = flat.max(axis=1) if flat.shape[1] else np.nan
        mean[s : s + step] = flat.mean(axis=1, dtype=np.float64)  # buffered cast, no float copy
    return {"pixel_min": lo, "pixel_max": hi, "pixel_range": hi - lo, "pixel_mean": mean}


def class_table(images: pd.DataFrame, classes: list[str], splits: list[str]) -> pd.DataFrame:
    """Images per (split, class), zeros included, and each count / the split's largest."""
    labels = images.dropna(subset=["label", "split"])
    counts = labels.groupby(["split", "label"]).size()
    rows = []
    for split in splits:
        n = [int(counts.get((split, k), 0)) for k in range(len(classes))]
        top = max(n) or 1
        rows += [
            {
                "split": split,
                "label": k,
                "class_name": c,
                "count": n[k],
                "share_of_largest": n[k] / top,
            }
            for k, c in enumerate(classes)
        ]
    return pd.DataFrame(rows)


def split_table(images: pd.DataFrame, quarantine: pd.DataFrame, splits: list[str]) -> pd.DataFrame:
    """Images, quarantined (unreadable) files and their share of all files, per split."""
    have = images.dropna(subset=["height"]).groupby("split").size()
    bad = quarantine.groupby("split").size() if len(quarantine) else pd.Series(dtype=int)
    rows = []
    for split in [*splits, *sorted(set(bad.index) - set(splits))]:
        n, q = int(have.get(split, 0)), int(bad.get(split, 0))
        rows.append(
            {
                "split": split,
                "n_images": n,
                "n_quarantined": q,
                "quarantine_share": q / (n + q) if n + q else 0.0,
            }
        )
    return pd.DataFrame(rows)


def _load(path: Path, *, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: missing; run prepare again")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UserError(f"{path}: not a readable .npy array ({e}); run prepare again") from None


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) or (isinstance(x, float) and x.is_integer())
