"""ImageWoof (fast.ai): 10 dog breeds from ImageNet, imagewoof2-320 tarball.

The archive's `val/` folder is the official held-out set and becomes our test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.common import UserError
from tasks.params import DataParams
from tasks.sources import RawDataset, RawSplit, fetch_archive, image_files, write_fetch_record

URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-320.tgz"
MD5 = "af65be7963816efa949fa3c3b4947740"
FOLDER = "imagewoof2-320"
BREEDS = {  # ImageNet wnid -> breed, as the folders are named by wnid
    "n02093754": "Australian terrier",
    "n02088364": "Beagle",
    "n02096294": "Border terrier",
    "n02115641": "Dingo",
    "n02089973": "English foxhound",
    "n02099601": "Golden retriever",
    "n02105641": "Old English sheepdog",
    "n02087394": "Rhodesian ridgeback",
    "n02086240": "Shih-Tzu",
    "n02111889": "Samoyed",
}
SPLITS = {"train": "train", "val": "test"}  # archive folder -> our split


def fetch(data: DataParams, out: Path) -> None:
    md5 = fetch_archive(data, out, url=URL, md5=MD5)
    for folder in SPLITS:
        if not (out / FOLDER / folder).is_dir():
            raise UserError(
                f"{data.url or URL}: {FOLDER}/{folder}/ missing: not an imagewoof2-320 archive"
            )
    write_fetch_record(out, source="imagewoof", url=data.url or URL, md5=md5)


def read(raw: Path, source: str = "imagewoof") -> RawDataset:
    root = raw / FOLDER
    wnids = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    classes = [BREEDS.get(w, w) for w in wnids]
    splits = {}
    for folder, split in SPLITS.items():
        paths, labels = [], []
        for label, wnid in enumerate(wnids):
            files = image_files(root / folder / wnid) if (root / folder / wnid).is_dir() else []
            paths += files
            labels += [label] * len(files)
        sources = [str(p.relative_to(raw)) for p in paths]
        splits[split] = RawSplit(np.asarray(labels, dtype=np.int64), sources, paths=paths)
    return RawDataset("imagewoof", classes, splits)
