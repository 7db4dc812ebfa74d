"""prepare: class filtering, stratified subsampling, seeded splits, atomic output."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.common import UserError
from tasks.fetch import fetch
from tasks.params import DataParams, section
from tasks.prepare import prepare, summary


@pytest.fixture(scope="module")
def digits_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    data = section("data", raw_dir=str(root / "raw"), prepared_dir=str(root / "prepared"))
    fetch(data=data)
    return data


def run(data: DataParams, tmp_path, **cfg):
    data = section("data", raw_dir=data.raw_dir, prepared_dir=str(tmp_path / "prepared"))
    return prepare(data=data, cfg=section("prepare", **cfg))


def test_held_out_class_is_gone_from_every_split(digits_raw, tmp_path):
    ds = run(digits_raw, tmp_path, exclude=("8",))
    assert "8" not in ds.classes and len(ds.classes) == 9
    for split in ("train", "val", "test"):
        labels = ds.labels(split)
        assert labels.min() == 0 and labels.max() == 8  # contiguous labels after filtering
    assert "8" not in set(ds.index().class_name)


def test_include_keeps_only_the_named_classes(digits_raw, tmp_path):
    ds = run(digits_raw, tmp_path, include=("3", "7"))
    assert ds.classes == ["3", "7"]
    assert set(ds.index().class_name) == {"3", "7"}


def test_unknown_class_name_fails_naming_the_key_and_the_classes(digits_raw, tmp_path):
    with pytest.raises(UserError) as e:
        run(digits_raw, tmp_path, exclude=("ship",))
    assert "prepare.exclude" in str(e.value) and "0, 1, 2" in str(e.value)
    assert not (tmp_path / "prepared").exists()


def test_max_per_class_subsamples_every_class_evenly(digits_raw, tmp_path):
    ds = run(digits_raw, tmp_path, max_per_class=50, test_fraction=0.2, val_fraction=0.1)
    counts = ds.index().groupby("class_name").size()
    assert (counts == 50).all()
    assert set(ds.info["counts"]["test"].values()) == {10}


def test_fraction_keeps_that_share_of_each_class(digits_raw, tmp_path):
    full = run(digits_raw, tmp_path / "a").index().groupby("class_name").size()
    half = run(digits_raw, tmp_path / "b", fraction=0.5).index().groupby("class_name").size()
    assert (abs(half - full * 0.5) <= 1).all()


def test_splits_are_seeded_disjoint_and_stratified(digits_raw, tmp_path):
    a = run(digits_raw, tmp_path / "a", seed=1).index()
    b = run(digits_raw, tmp_path / "b", seed=1).index()
    c = run(digits_raw, tmp_path / "c", seed=2).index()
    assert a.equals(b)  # same seed, same split
    assert not a[a.split == "test"].source.equals(
        c[c.split == "test"].source.reset_index(drop=True)
    )
    by_split = {s: set(a[a.split == s].source) for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])
    assert sum(len(v) for v in by_split.values()) == 1797
    share = a[a.split == "test"].groupby("class_name").size() / a.groupby("class_name").size()
    assert share.between(0.17, 0.23).all()


def test_images_match_their_index_rows(digits_raw, tmp_path):
    import hashlib

    ds = run(digits_raw, tmp_path, image_size=None)
    index = ds.index().query("split == 'val'")
    raw = np.load(f"{digits_raw.raw_dir}/images.npy")
    for _, row in index.head(5).iterrows():
        img = ds.images("val")[row.idx]
        source_row = int(row.source.split("#")[1])
        assert (img[..., 0] == raw[source_row]).all()
        assert row.sha256 == hashlib.sha256(np.ascontiguousarray(img)).hexdigest()
        assert ds.labels("val")[row.idx] == row.label


def test_a_failed_run_leaves_the_previous_output_intact(digits_raw, tmp_path, monkeypatch):
    good = run(digits_raw, tmp_path, image_size=16)
    before = good.images("train").copy()

    def boom(*a, **k):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr("tasks.prepare.fit", boom)
    with pytest.raises(RuntimeError):
        run(digits_raw, tmp_path, image_size=24)
    after = np.load(tmp_path / "prepared/train/images.npy")
    assert (after == before).all()
    assert not list(tmp_path.glob(".prepared.*"))  # no half-written folder left behind


def test_summary_fits_one_screen_and_names_the_numbers(digits_raw, tmp_path):
    text = summary(run(digits_raw, tmp_path))
    assert "10 classes" in text and "32x32" in text and "total" in text
    assert len(text.splitlines()) <= 24


def test_prepare_before_fetch_says_what_to_run(tmp_path):
    data = section("data", raw_dir=str(tmp_path / "raw"), prepared_dir=str(tmp_path / "p"))
    with pytest.raises(UserError, match="tasks.fetch"):
        prepare(data=data, cfg=section("prepare"))


def test_a_folder_without_images_is_a_clear_error(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        (tmp_path / "src" / cls / "notes.txt").write_text("no images here")
    data = section(
        "data",
        source="folder",
        path=str(tmp_path / "src"),
        raw_dir=str(tmp_path / "raw"),
        prepared_dir=str(tmp_path / "p"),
    )
    fetch(data=data)
    with pytest.raises(UserError, match="no images"):
        prepare(data=data, cfg=section("prepare", image_size=16))
    assert not (tmp_path / "p").exists()
