"""CIFAR-10 / CIFAR-100, "python version" archives from the official site (or a mirror).

The archive's md5 is checked before extraction; every extracted file's sha256 is recorded
and checked again before it is unpickled, and unpickling only admits numpy arrays and
plain containers.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.common import UserError
from tasks.params import DataParams
from tasks.sources import (
    RawDataset,
    RawSplit,
    fetch_archive,
    verify_fetched,
    write_fetch_record,
)


@dataclass(frozen=True)
class Spec:
    url: str
    md5: str  # published checksum of the archive
    folder: str  # top folder inside the archive
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: bytes
    names_key: bytes


SPECS = {
    "cifar10": Spec(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test="test_batch",
        meta="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
    ),
    "cifar100": Spec(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train=("train",),
        test="test",
        meta="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
    ),
}


def fetch(data: DataParams, out: Path) -> None:
    spec = SPECS[data.source]
    md5 = fetch_archive(data, out, url=spec.url, md5=spec.md5)
    for name in (*spec.train, spec.test, spec.meta):
        if not (out / spec.folder / name).is_file():
            raise UserError(
                f"{data.url or spec.url}: {spec.folder}/{name} missing: not a CIFAR "
                f"python-version archive for {data.source}"
            )
    write_fetch_record(out, source=data.source, url=data.url or spec.url, md5=md5)


def read(raw: Path, source: str) -> RawDataset:
    spec = SPECS[source]
    meta = _load(raw, f"{spec.folder}/{spec.meta}")
    classes = [n.decode() for n in meta[spec.names_key]]
    extra_classes = {}
    if b"coarse_label_names" in meta:
        extra_classes["coarse_label"] = [n.decode() for n in meta[b"coarse_label_names"]]
    splits = {"train": _split(raw, spec, spec.train), "test": _split(raw, spec, (spec.test,))}
    return RawDataset(source, classes, splits, extra_classes)


def _split(raw: Path, spec: Spec, files: tuple[str, ...]) -> RawSplit:
    images, labels, coarse, sources = [], [], [], []
    for name in files:
        batch = _load(raw, f"{spec.folder}/{name}")
        data = np.asarray(batch[b"data"], dtype=np.uint8)  # (n, 3072), channel-major
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (n, 32, 32, 3)
        labels.append(np.asarray(batch[spec.label_key], dtype=np.int64))
        if b"coarse_labels" in batch:
            coarse.append(np.asarray(batch[b"coarse_labels"], dtype=np.int64))
        sources += [f"{spec.folder}/{name}#{i}" for i in range(len(data))]
    extra = {"coarse_label": np.concatenate(coarse)} if coarse else {}
    return RawSplit(np.concatenate(labels), sources, images=np.concatenate(images), extra=extra)


class _SafeUnpickler(pickle.Unpickler):
    """Admits only what CIFAR batches contain: numpy arrays and builtin containers."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("copy_reg", "_reconstructor"),
        ("copyreg", "_reconstructor"),
        ("__builtin__", "object"),
        ("builtins", "object"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _load(raw: Path, rel: str) -> dict:
    path = verify_fetched(raw, rel)
    try:
        return _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise UserError(f"{path}: not a CIFAR batch ({e})") from None
