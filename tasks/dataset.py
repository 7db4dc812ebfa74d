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
INDEX_COLUMNS = [
    "split",
    "idx",
    "label",
    "class_name",
    "source",
    "sha256",
    "orig_height",
    "orig_width",
]
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

        # Class names like "3" must stay strings, not become numbers.
        text = {c: str for c in ("split", "class_name", "source", "sha256", "coarse_class")}
        return pd.read_csv(self.root / INDEX, dtype=text, keep_default_na=False)

    def quarantine(self):
        import pandas as pd

        return pd.read_csv(self.root / QUARANTINE, dtype=str, keep_default_na=False)

    def _split_file(self, split: str, name: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
        return self.root / split / name


def open_prepared(path: str | Path) -> Prepared:
    """Open a prepared dataset; a clear error if the prepare stage has not run there."""
    root = Path(path)
    if not (root / INFO).is_file():
        raise UserError(
            f"{root}: no prepared dataset here ({INFO} missing); run "
            "`python -m tasks.prepare` (or `dvc repro prepare`) first"
        )
    return Prepared(root)


class NpyWriter:
    """Stream rows into a `.npy` file without holding (or memory-mapping) the whole array.

    The header is written for `capacity` rows up front and rewritten on `close()` for the
    rows actually written, so skipped (unreadable) images leave no gap. Memory stays at one
    chunk whatever the dataset size: a 60,000-image CIFAR-10 at 64 px is 737 MB on disk.
    """

    def __init__(
        self,
        path: Path,
        capacity: int,
        row_shape: tuple[int, ...],
        dtype=np.uint8,
        chunk: int = 1024,
    ):
        self.path, self.row_shape, self.dtype = Path(path), tuple(row_shape), np.dtype(dtype)
        self.capacity, self.count = capacity, 0
        self._buf = np.empty((min(chunk, max(capacity, 1)), *row_shape), dtype)
        self._fill = 0
        self._f = open(self.path, "wb")  # noqa: SIM115  (closed in close()/__exit__)
        self._header_len = self._write_header(capacity)

    def append(self, row: np.ndarray) -> None:
        if self.count + self._fill >= self.capacity:
            raise ValueError(f"{self.path}: more than {self.capacity} rows")
        self._buf[self._fill] = row
        self._fill += 1
        if self._fill == len(self._buf):
            self._flush()

    def close(self) -> int:
        """Finish the file; returns the number of rows written."""
        self._flush()
        if self.count != self.capacity:
            header = self._header(self.count)
            if len(header) == self._header_len:  # shrinking never lengthens the padded header
                self._f.seek(0)
                self._f.write(header)
            self._f.truncate(self._header_len + self.count * self._row_bytes)
        self._f.close()
        return self.count

    @property
    def _row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    def _header(self, n: int) -> bytes:
        import io

        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf,
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (n, *self.row_shape),
            },
        )
        return buf.getvalue()

    def _write_header(self, n: int) -> int:
        header = self._header(n)
        self._f.write(header)
        return len(header)

    def _flush(self) -> None:
        if self._fill:
            self._f.write(self._buf[: self._fill].tobytes())
            self.count += self._fill
            self._fill = 0

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self._f.closed:
            self._f.close()
