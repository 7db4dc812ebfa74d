"""The embedded default: scikit-learn's 1,797 handwritten digits (8x8, 10 classes).

Ships inside scikit-learn, so it needs no network. Pixel values 0..16 become uint8 0..255.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tasks.common import atomic_write_json
from tasks.params import DataParams
from tasks.sources import RawDataset, RawSplit, verify_fetched, write_fetch_record


def fetch(data: DataParams, out: Path) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    # Plain .npy files, not .npz: a zip stamps the time, and the raw folder must hash the
    # same on every fetch so DVC skips the stages below it.
    np.save(out / "images.npy", images)
    np.save(out / "labels.npy", d.target.astype(np.int64))
    atomic_write_json(out / "classes.json", [str(c) for c in d.target_names])
    write_fetch_record(out, source="digits", url="sklearn.datasets.load_digits")


def read(raw: Path, source: str = "digits") -> RawDataset:
    gray = np.load(verify_fetched(raw, "images.npy"), allow_pickle=False)  # (N, 8, 8)
    labels = np.load(verify_fetched(raw, "labels.npy"), allow_pickle=False)
    classes = json.loads(verify_fetched(raw, "classes.json").read_text())
    rgb = np.repeat(gray[..., None], 3, axis=-1)  # (N, 8, 8, 3)
    sources = [f"images.npy#{i}" for i in range(len(labels))]
    return RawDataset("digits", classes, {"train": RawSplit(labels, sources, images=rgb)})
