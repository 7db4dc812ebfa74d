"""The prepared dataset on disk, as every later stage reads it.

    data/prepared/
      dataset.json          name, source, classes, image size, counts, the params used
      classes.json          label -> class name
      index.csv             one row per image: split, idx, label, class_name, source, sha256,
                            orig_height, orig_width (+ coarse_label/coarse_class for CIFAR-100)
      quarantine.csv        files that could not be decoded, with the reason
      <split>/images.npy    (N, H, W, 3) uint8, memory-mappable
      <split>/labels.npy    (N,) int64
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from tasks.common import UserError

SPLITS = ("train", "val", "test")
INFO, CLASSES, INDEX, QUARANTINE = "dataset.json", "classes.json", "index.csv", "quarantine.csv"
INDEX_COLUMNS = ["split", "idx", "label", "class_name", "source", "sha256",
                 "orig_height", "orig_width"]
QUARANTINE_COLUMNS = ["split", "source", "reason"]


@dataclass(frozen=True)
class Prepared:
    root: Path

    @cached_property
    def info(self) -> dict:
        return json.loads((self.root / INFO).read_text())

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])

    @property
    def image_size(self) -> int:
        return int(self.info["image_size"])

    def images(self, split: str, mmap: bool = True) -> np.ndarray:
        """(N, H, W, 3) uint8; memory-mapped by default, so nothing big is loaded."""
        return np.load(self._split_file(split, "images.npy"), mmap_mode="r" if mmap else None)

    def labels(self, split: str) -> np.ndarray:
        return np.load(self._split_file(split, "labels.npy"))

    def index(self):
        import pandas as pd

        return pd.read_csv(self.root / INDEX, keep_default_na=False)

    def quarantine(self):
        import pandas as pd

        return pd.read_csv(self.root / QUARANTINE, keep_default_na=False)

    def _split_file(self, split: str, name: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
        return self.root / split / name


def open_prepared(path: str | Path) -> Prepared:
    """Open a prepared dataset; a clear error if the prepare stage has not run there."""
    root = Path(path)
    if not (root / INFO).is_file():
        raise UserError(f"{root}: no prepared dataset here ({INFO} missing); run "
                        "`python -m tasks.prepare` (or `dvc repro prepare`) first")
    return Prepared(root)
