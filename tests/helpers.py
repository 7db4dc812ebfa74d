"""Builders for small, real inputs that tests share."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tasks.common import atomic_write_json
from tasks.dataset import CLASSES, INDEX, INDEX_COLUMNS, INFO, QUARANTINE, QUARANTINE_COLUMNS
from tasks.paramfile import read_raw
from tasks.params import PROJECT_PARAMS


def write_prepared(
    root: Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: list[str],
    *,
    name: str = "fixture",
    quarantined: list[tuple[str, str, str]] = (),
) -> Path:
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
            rows.append(
                [
                    split,
                    i,
                    int(lab),
                    classes[int(lab)],
                    f"{split}/{i}.png",
                    hashlib.sha256(np.ascontiguousarray(img)).hexdigest(),
                    img.shape[0],
                    img.shape[1],
                ]
            )
        counts[split] = {c: int((np.asarray(labels) == k).sum()) for k, c in enumerate(classes)}
    pd.DataFrame(rows, columns=INDEX_COLUMNS).to_csv(root / INDEX, index=False)
    pd.DataFrame(list(quarantined), columns=QUARANTINE_COLUMNS).to_csv(
        root / QUARANTINE, index=False
    )
    atomic_write_json(root / CLASSES, classes)
    atomic_write_json(
        root / INFO,
        {
            "name": name,
            "source": "folder",
            "classes": classes,
            "image_size": max(sizes),
            "n": {s: sum(c.values()) for s, c in counts.items()},
            "counts": counts,
            "quarantined": len(quarantined),
            "params": {},
        },
    )
    return root


def params_yaml(changes: dict | None = None) -> str:
    """The project's params.yaml with `changes` merged in, section by section (a params file
    must set every key; a test names only the ones it changes)."""

    def merged(base: dict, new: dict) -> dict:
        out = dict(base)
        for k, v in new.items():
            both = isinstance(v, dict) and isinstance(base.get(k), dict)
            out[k] = merged(base[k], v) if both else v
        return out

    return yaml.safe_dump(merged(read_raw(PROJECT_PARAMS), changes or {}), sort_keys=False)


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 noise: distinct images, no two alike."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def cifar_archive(
    path: Path,
    kind: str = "cifar10",
    *,
    per_batch: int = 20,
    n_test: int = 20,
    classes: list[str] | None = None,
    seed: int = 0,
) -> Path:
    """A .tar.gz in the official "CIFAR python version" layout, with small batches.

    Batches are pickled dicts with bytes keys, as in the real archives: CIFAR-10 has
    data_batch_1..5 + test_batch + batches.meta (b'labels', b'label_names'); CIFAR-100 has
    train + test + meta (b'fine_labels', b'coarse_labels', b'fine_label_names', ...).
    """
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        classes = classes or [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
        folder, meta_name = "cifar-10-batches-py", "batches.meta"
        files = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": n_test}
        meta = {b"label_names": [c.encode() for c in classes], b"num_cases_per_batch": per_batch}
    else:
        classes = classes or [f"fine{i}" for i in range(6)]
        folder, meta_name = "cifar-100-python", "meta"
        files = {"train": per_batch * 5, "test": n_test}
        meta = {
            b"fine_label_names": [c.encode() for c in classes],
            b"coarse_label_names": [b"coarse0", b"coarse1"],
        }
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, obj: object) -> None:
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        for name, n in files.items():
            labels = [int(x) for x in np.arange(n) % len(classes)]
            batch = {
                b"batch_label": name.encode(),
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
            }
            if kind == "cifar10":
                batch[b"labels"] = labels
            else:
                batch[b"fine_labels"] = labels
                batch[b"coarse_labels"] = [x % 2 for x in labels]
            add(name, batch)
        add(meta_name, meta)
    return path


def image_tree_archive(
    path: Path,
    top: str,
    tree: dict[str, dict[str, int]],
    *,
    size: tuple[int, int] = (40, 30),
    seed: int = 0,
) -> Path:
    """A .tgz of JPEGs laid out as top/<split>/<class>/<n>.JPEG (e.g. imagewoof2-320)."""
    import io
    import tarfile

    from PIL import Image

    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as tar:
        for split, classes in tree.items():
            for cls, n in classes.items():
                for i in range(n):
                    buf = io.BytesIO()
                    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(buf, format="JPEG")
                    info = tarfile.TarInfo(f"{top}/{split}/{cls}/{cls}_{i}.JPEG")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    return path


def class_images(
    n: int, seed: int, size: int = 32, classes: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size, 3) uint8 images whose brightness tells the class, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    base = (labels * 100 + 20)[:, None, None, None]
    images = np.clip(base + rng.integers(-20, 21, (n, size, size, 3)), 0, 255)
    return images.astype(np.uint8), labels
