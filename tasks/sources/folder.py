"""Any folder of class sub-folders, local or on S3 (AWS, MinIO, any S3-compatible store).

Two layouts are understood:

    root/<class>/<image>                 one pool, test and val are carved from it
    root/<split>/<class>/<image>         split folders named train/training, val/valid/
                                         validation, test/testing (Brain Tumor MRI:
                                         Training/ and Testing/)
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from tasks import s3
from tasks.common import UserError, atomic_path
from tasks.params import DataParams
from tasks.sources import RawDataset, RawSplit, image_files, write_fetch_record

log = logging.getLogger(__name__)

DATA = "data"  # the copied tree lives in raw/data/
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def fetch(data: DataParams, out: Path) -> None:
    assert data.path  # checked by DataParams
    dest = out / DATA
    if data.path.startswith("s3://"):
        n = _download_s3(data.path, dest, data=data)
    else:
        src = Path(data.path).expanduser()
        if not src.is_dir():
            raise UserError(
                f"data.path: {src} is not a folder (give a folder of class "
                "sub-folders, or s3://bucket/prefix)"
            )
        n = _copy_local(src, dest)
    if n == 0:
        raise UserError(f"data.path: no files found under {data.path}")
    write_fetch_record(out, source="folder", url=data.path)


def read(raw: Path, source: str = "folder") -> RawDataset:
    root = raw / DATA
    top = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    split_dirs = {d: SPLIT_NAMES.get(d.name.lower()) for d in top}
    if top and all(split_dirs.values()):
        layout = {split_dirs[d]: d for d in top}
        if "train" not in layout:
            raise UserError(
                f"{root}: split folders {[d.name for d in top]} have no train "
                "folder (train/ or Training/)"
            )
    else:
        layout = {"train": root}
    classes = sorted(
        {
            c.name
            for d in layout.values()
            for c in d.iterdir()
            if c.is_dir() and not c.name.startswith(".")
        }
    )
    if not classes:
        raise UserError(
            f"{root}: no class sub-folders found (expected <class>/<image> or "
            "<split>/<class>/<image>)"
        )
    splits = {}
    for split, folder in layout.items():
        paths, labels = [], []
        for label, name in enumerate(classes):
            files = image_files(folder / name) if (folder / name).is_dir() else []
            paths += files
            labels += [label] * len(files)
        splits[split] = RawSplit(
            np.asarray(labels, dtype=np.int64),
            [str(p.relative_to(root)) for p in paths],
            paths=paths,
        )
    return RawDataset("folder", classes, splits)


def _copy_local(src: Path, dest: Path) -> int:
    n = 0
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if not p.is_file() or p.is_symlink() or any(s.startswith(".") for s in rel.parts):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
        n += 1
    log.info("copied %d files from %s", n, src)
    return n


def _download_s3(uri: str, dest: Path, *, data: DataParams) -> int:
    bucket, prefix = s3.split_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    client = s3.client(
        endpoint_url=data.s3_endpoint_url,
        attempts=data.download_retries,
        timeout=data.download_timeout,
        endpoint_key="data.s3_endpoint_url",
    )
    n = 0
    with s3.errors(
        uri, client, param="data.path", what="download", endpoint_key="data.s3_endpoint_url"
    ):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                parts = rel.split("/")
                if not rel or rel.endswith("/") or any(p in ("", ".", "..") for p in parts):
                    continue  # folder markers; keys that would escape dest are skipped
                if any(p.startswith(".") for p in parts):
                    continue
                target = dest / rel
                with atomic_path(target) as tmp:
                    client.download_file(bucket, obj["Key"], str(tmp))
                    _check_etag(tmp, obj, uri)
                n += 1
    log.info("downloaded %d objects from %s", n, uri)
    return n


def _check_etag(path: Path, obj: dict, uri: str) -> None:
    """A single-part upload's ETag is the object's md5: verify it when it is one."""
    from tasks.common import file_digest

    etag = obj.get("ETag", "").strip('"')
    if len(etag) == 32 and "-" not in etag and file_digest(path, "md5") != etag:
        raise UserError(f"{uri}/{obj['Key']}: downloaded bytes do not match the object's md5")
    if os.path.getsize(path) != obj.get("Size", os.path.getsize(path)):
        raise UserError(f"{uri}/{obj['Key']}: download was truncated")
