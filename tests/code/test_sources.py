"""Every source, fetched from a loopback stand-in it cannot tell from the real thing,
then prepared into the standard layout."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from tasks.common import UserError, file_digest
from tasks.fetch import fetch
from tasks.params import DataParams, section
from tasks.prepare import prepare
from tests.helpers import cifar_archive, image_tree_archive


def data_params(tmp_path: Path, **kw) -> DataParams:
    return section(
        "data",
        cache_dir=str(tmp_path / "downloads"),
        raw_dir=str(tmp_path / "raw"),
        prepared_dir=str(tmp_path / "prepared"),
        download_backoff=0.01,
        **kw,
    )


def serve(http_server, archive: Path) -> tuple[str, str]:
    url, www = http_server
    (www / archive.name).write_bytes(archive.read_bytes())
    return f"{url}/{archive.name}", file_digest(archive, "md5")


def test_digits_embedded_default(tmp_path):
    data = data_params(tmp_path)
    fetch(data=data)
    ds = prepare(data=data, cfg=section("prepare", image_size=32))
    assert ds.classes == [str(i) for i in range(10)]
    assert sum(ds.info["n"].values()) == 1797
    x = ds.images("train")
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3)
    assert isinstance(x, np.memmap)
    assert (x[..., 0] == x[..., 1]).all()  # grey digits as RGB


def test_cifar10_from_a_mirror_in_the_official_layout(http_server, tmp_path):
    url, md5 = serve(http_server, cifar_archive(tmp_path / "cifar-10-python.tar.gz"))
    data = data_params(tmp_path, source="cifar10", url=url, md5=md5)
    fetch(data=data)
    ds = prepare(data=data, cfg=section("prepare", image_size=None, val_fraction=0.2))
    assert ds.classes[0] == "airplane" and len(ds.classes) == 10  # from batches.meta
    assert ds.info["n"] == {"train": 80, "val": 20, "test": 20}  # 5 x 20 train, 20 test
    # pixels are CIFAR's channel-major rows turned into (H, W, 3)
    raw = pickle.loads(
        (tmp_path / "raw/cifar-10-batches-py/test_batch").read_bytes(), encoding="bytes"
    )
    first = raw[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    assert (ds.images("test")[0] == first).all()
    assert ds.index().query("split == 'test'").source.iloc[0].endswith("test_batch#0")


def test_cifar100_keeps_fine_and_coarse_labels(http_server, tmp_path):
    url, md5 = serve(
        http_server, cifar_archive(tmp_path / "cifar-100-python.tar.gz", kind="cifar100")
    )
    data = data_params(tmp_path, source="cifar100", url=url, md5=md5)
    fetch(data=data)
    ds = prepare(data=data, cfg=section("prepare", image_size=None, exclude=("fine5",)))
    assert ds.classes == ["fine0", "fine1", "fine2", "fine3", "fine4"]
    index = ds.index()
    assert set(index.coarse_class) == {"coarse0", "coarse1"}
    assert (index.coarse_label == index.label % 2).all()


def test_archive_checksum_is_checked_before_anything_is_extracted(http_server, tmp_path):
    url, _ = serve(http_server, cifar_archive(tmp_path / "cifar-10-python.tar.gz"))
    data = data_params(tmp_path, source="cifar10", url=url, md5="0" * 32)
    with pytest.raises(UserError, match="checksum mismatch"):
        fetch(data=data)
    assert not (tmp_path / "raw").exists()


def test_a_mirror_without_its_md5_is_refused(tmp_path):
    data = data_params(tmp_path, source="cifar10", url="http://127.0.0.1:9/x.tar.gz")
    with pytest.raises(UserError, match="data.md5 is required"):
        fetch(data=data)


class _Evil:
    """Unpickling this creates a file: the proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_changed_after_fetch_is_never_unpickled(http_server, tmp_path):
    url, md5 = serve(http_server, cifar_archive(tmp_path / "cifar-10-python.tar.gz"))
    data = data_params(tmp_path, source="cifar10", url=url, md5=md5)
    fetch(data=data)
    marker = tmp_path / "pwned"
    batch = tmp_path / "raw/cifar-10-batches-py/data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": _Evil(marker)}))
    with pytest.raises(UserError, match="data_batch_3.*sha256"):
        prepare(data=data, cfg=section("prepare", image_size=None))
    assert not marker.exists()
    assert not (tmp_path / "prepared").exists()
    # Even with the record forged to match, the restricted unpickler refuses the payload.
    record = json.loads((tmp_path / "raw/fetch.json").read_text())
    record["files"]["cifar-10-batches-py/data_batch_3"] = file_digest(batch)
    (tmp_path / "raw/fetch.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"refusing to load (io|builtins)\.open"):
        prepare(data=data, cfg=section("prepare", image_size=None))
    assert not marker.exists()


def test_imagewoof_folders_become_breed_names_and_val_is_the_test_split(http_server, tmp_path):
    tree = {"train": {"n02088364": 6, "n02111889": 5}, "val": {"n02088364": 2, "n02111889": 3}}
    url, md5 = serve(
        http_server, image_tree_archive(tmp_path / "imagewoof2-320.tgz", "imagewoof2-320", tree)
    )
    data = data_params(tmp_path, source="imagewoof", url=url, md5=md5)
    fetch(data=data)
    ds = prepare(data=data, cfg=section("prepare", image_size=24, val_fraction=0.2))
    assert ds.classes == ["Beagle", "Samoyed"]
    assert ds.info["counts"]["test"] == {"Beagle": 2, "Samoyed": 3}
    assert ds.info["n"]["train"] + ds.info["n"]["val"] == 11
    assert ds.images("test").shape == (5, 24, 24, 3)
    index = ds.index()
    assert set(index.orig_width) == {40} and set(index.orig_height) == {30}


def png(path: Path, mode: str, size=(20, 16), **save) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    elif mode in ("L", "P"):
        img = Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8), "L")
        img = img.convert("P") if mode == "P" else img
    else:
        bands = len(mode)
        img = Image.fromarray(rng.integers(0, 256, (*size[::-1], bands), dtype=np.uint8), mode)
    img.save(path, **save)
    return path


def mri_folder(root: Path) -> Path:
    """Brain Tumor MRI layout with the awkward files a real folder has."""
    for split, n in (("Training", 4), ("Testing", 2)):
        for cls in ("glioma", "notumor"):
            for i in range(n):
                png(root / split / cls / f"{i}.jpg", "RGB", format="JPEG")
    png(root / "Training/glioma/gray.png", "L")
    png(root / "Training/glioma/rgba.png", "RGBA")
    png(root / "Training/notumor/cmyk.jpg", "CMYK", format="JPEG")
    png(root / "Training/notumor/sixteen.png", "I;16")
    png(root / "Training/notumor/palette.png", "P")
    full = png(root / "Training/notumor/truncated.jpg", "RGB", size=(64, 64), format="JPEG")
    full.write_bytes(full.read_bytes()[:300])
    (root / "Training/glioma/notes.jpg").write_text("not an image at all")
    (root / "Training/glioma/README.txt").write_text("ignored: not an image suffix")
    return root


def test_folder_source_converts_modes_and_quarantines_bad_files(tmp_path):
    src = mri_folder(tmp_path / "mri")
    data = data_params(tmp_path, source="folder", path=str(src))
    fetch(data=data)
    ds = prepare(data=data, cfg=section("prepare", image_size=16, val_fraction=0.25))
    q = ds.quarantine()
    assert sorted(Path(s).name for s in q.source) == ["notes.jpg", "truncated.jpg"]
    assert all(q.reason.str.len() > 0)
    assert ds.info["quarantined"] == 2
    assert ds.classes == ["glioma", "notumor"]
    assert ds.info["n"]["test"] == 4  # Testing/ stays the test set
    assert ds.info["n"]["train"] + ds.info["n"]["val"] == 8 + 5  # 13 good training files
    idx = ds.index()
    assert {
        "Training/glioma/gray.png",
        "Training/notumor/sixteen.png",
        "Training/glioma/rgba.png",
        "Training/notumor/cmyk.jpg",
    } <= set(idx.source)
    for split in ("train", "val", "test"):
        x = ds.images(split)
        assert x.shape[1:] == (16, 16, 3) and x.dtype == np.uint8
        assert len(x) == len(ds.labels(split)) == ds.info["n"][split]


def test_folder_from_s3_on_a_loopback_server(s3_server, tmp_path):
    src = mri_folder(tmp_path / "mri")
    s3 = s3_server.client()
    s3.create_bucket(Bucket="datasets")
    for p in src.rglob("*"):
        if p.is_file():
            s3.upload_file(str(p), "datasets", f"brain-mri/{p.relative_to(src)}")
    data = data_params(
        tmp_path,
        source="folder",
        path="s3://datasets/brain-mri",
        s3_endpoint_url=s3_server.endpoint_url,
    )
    fetch(data=data)
    ds = prepare(data=data, cfg=section("prepare", image_size=16))
    assert ds.classes == ["glioma", "notumor"] and ds.info["quarantined"] == 2
    local = {
        p.relative_to(src).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in src.rglob("*")
        if p.is_file()
    }
    record = json.loads((tmp_path / "raw/fetch.json").read_text())["files"]
    assert {k.removeprefix("data/"): v for k, v in record.items()} == local


def test_s3_errors_are_one_clear_message(s3_server, tmp_path):
    data = data_params(
        tmp_path,
        source="folder",
        path="s3://no-such-bucket/x",
        s3_endpoint_url=s3_server.endpoint_url,
        download_retries=2,  # botocore's standard mode: one retry, under a second of backoff
    )
    with pytest.raises(UserError, match="NoSuchBucket"):
        fetch(data=data)
    s3_server.stop()
    with pytest.raises(UserError, match="cannot reach"):
        fetch(data=data)
    assert not (tmp_path / "raw").exists()
