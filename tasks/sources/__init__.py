"""Dataset sources. Each module has `fetch(data, out)` (source -> raw folder) and
`read(raw)` (raw folder -> RawDataset). `prepare` only sees RawDataset.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from tasks.common import UserError, atomic_write_json, file_digest
from tasks.params import DataParams

FETCH_RECORD = "fetch.json"  # what fetch wrote: source, url, md5, sha256 of every file
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class RawSplit:
    """One official split as the source gives it, before filtering."""

    labels: np.ndarray  # (N,) int64, index into RawDataset.classes
    sources: list[str]  # (N,) where each image came from: a file, or archive-member#row
    images: np.ndarray | None = None  # (N, h, w, 3) uint8, for sources held as arrays
    paths: list[Path] | None = None  # (N,) image files, for sources held as files
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. coarse_label (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class RawDataset:
    name: str
    classes: list[str]  # label -> class name, in the source's own order
    splits: dict[str, RawSplit]  # "train", and "val" / "test" where the source has them
    extra_classes: dict[str, list[str]] = field(default_factory=dict)  # coarse_label -> names


_MODULES = {
    "digits": "digits",
    "cifar10": "cifar",
    "cifar100": "cifar",
    "imagewoof": "imagewoof",
    "folder": "folder",
}


def module(source: str) -> ModuleType:
    """The module with `fetch(data, out)` and `read(raw, source)` for `source`."""
    return importlib.import_module(f"tasks.sources.{_MODULES[source]}")


def fetch_archive(data: DataParams, out: Path, *, url: str, md5: str) -> str:
    """Download the official archive (or `data.url`'s mirror), verify it, extract into `out`.

    Returns the md5 it was verified against. A mirror needs its own `data.md5`.
    """
    from tasks.download import download, safe_extract_tar

    src = data.url or url
    want = data.md5 or (md5 if src == url else None)
    if want is None:
        raise UserError(
            f"data.md5 is required with a mirror url ({src}): give the md5 of "
            "the archive so it can be verified before use"
        )
    archive = download(
        src,
        Path(data.cache_dir) / Path(url).name,
        md5=want,
        retries=data.download_retries,
        timeout=data.download_timeout,
        backoff=data.download_backoff,
    )
    safe_extract_tar(archive, out)
    return want


def write_fetch_record(out: Path, **info: object) -> None:
    """Record the sha256 of every file fetch wrote, so later readers can verify them."""
    files = {
        str(p.relative_to(out)): file_digest(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != FETCH_RECORD
    }
    atomic_write_json(out / FETCH_RECORD, {**info, "files": files})


def verify_fetched(raw: Path, rel: str) -> Path:
    """Check `raw/rel` against the sha256 fetch recorded; returns its path.

    Called before anything is unpickled, so a swapped or corrupted file is never loaded.
    """
    import json

    record_path = raw / FETCH_RECORD
    if not record_path.is_file():
        raise UserError(f"{raw}: no {FETCH_RECORD}; run the fetch stage first")
    files = json.loads(record_path.read_text())["files"]
    path = raw / rel
    if rel not in files or not path.is_file():
        raise UserError(f"{path}: missing from the fetched data; run the fetch stage again")
    if file_digest(path) != files[rel]:
        raise UserError(
            f"{path}: sha256 does not match what fetch recorded (changed or "
            "corrupted after download); run the fetch stage again"
        )
    return path


def image_files(folder: Path) -> list[Path]:
    """Image-looking files below `folder` (by suffix), sorted, hidden files skipped."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
