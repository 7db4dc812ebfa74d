"""Builders for small, real inputs that tests share."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.common import atomic_write_json
from tasks.dataset import CLASSES, INDEX, INDEX_COLUMNS, INFO, QUARANTINE, QUARANTINE_COLUMNS


def write_prepared(root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
                   classes: list[str], *, name: str = "fixture",
                   quarantined: list[tuple[str, str, str]] = ()) -> Path:
    """Write a prepared dataset in the layout `tasks.prepare` writes (tasks/dataset.py).

    `splits` maps split -> (images (N, H, W, 3) uint8, labels (N,) int).
    """
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    counts, sizes = {}, set()
    for split, (images, labels) in splits.items():
        (root / split).mkdir(exist_ok=True)
        np.save(root / split / "images.npy", np.asarray(images, dtype=np.uint8))
        np.save(root / split / "labels.npy", np.asarray(labels, dtype=np.int64))
        sizes.add(images.shape[1])
        for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
            rows.append([split, i, int(lab), classes[int(lab)], f"{split}/{i}.png",
                         hashlib.sha256(np.ascontiguousarray(img)).hexdigest(),
                         img.shape[0], img.shape[1]])
        counts[split] = {c: int((np.asarray(labels) == k).sum()) for k, c in enumerate(classes)}
    pd.DataFrame(rows, columns=INDEX_COLUMNS).to_csv(root / INDEX, index=False)
    pd.DataFrame(list(quarantined), columns=QUARANTINE_COLUMNS).to_csv(root / QUARANTINE,
                                                                        index=False)
    atomic_write_json(root / CLASSES, classes)
    atomic_write_json(root / INFO, {
        "name": name, "source": "folder", "classes": classes, "image_size": max(sizes),
        "n": {s: sum(c.values()) for s, c in counts.items()}, "counts": counts,
        "quarantined": len(quarantined), "params": {}})
    return root


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 noise: distinct images, no two alike."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
