"""The validate stage on small prepared datasets, each broken in one way a user would meet.

Every broken fixture must stop the run (exit 2) with a message naming the expectation that
caught it; the embedded digits dataset, fetched and prepared for real, must pass.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.params import section
from tasks.validate import validate
from tests.conftest import ROOT
from tests.data.validation_cases import CLASSES, PER_CLASS, SIZE, fails, run, splits
from tests.helpers import random_images, write_prepared


def test_a_clean_dataset_passes_and_writes_the_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # out_dir relative, as in params.yaml
    code, out, err, summary = run(tmp_path, splits(), capsys, out_dir="reports")
    assert code == 0, err
    assert summary["passed"] is True and summary["failed"] == []
    assert summary["rows"]["images"] == 3 * sum(PER_CLASS.values())
    assert "validation PASSED" in out and "leakage_across_splits" in out
    results = json.loads((tmp_path / "reports" / "results.json").read_text())
    assert {r["suite_name"] for r in results} == {"images", "classes", "splits"}
    # the offline page: every expectation, and a working link to GX's page of each suite
    page = (tmp_path / "reports" / "index.html").read_text()
    assert "Validation <span class=passed>PASSED" in page
    assert all(f"<td>{c['name']}</td>" in page for c in summary["checks"])
    links = re.findall(r'href="(docs/validations/[^"]+)"', page)
    assert len(links) == 3 and all((tmp_path / "reports" / link).is_file() for link in links)
    assert "https://" not in page  # nothing to fetch


def test_a_failed_run_shows_each_failure_with_examples_on_the_page(tmp_path, capsys):
    data = splits()
    data["test"][0][3] = data["train"][0][5]
    fails(tmp_path, data, capsys, "leakage_across_splits")
    page = (tmp_path / "reports" / "index.html").read_text()
    assert "Validation <span class=failed>FAILED" in page
    assert '<tr class="FAIL error"><td>leakage_across_splits</td>' in page
    assert "test #3: test/3.png | train #5: train/5.png" in page


def test_a_label_out_of_range_is_caught(tmp_path, capsys):
    prepared = write_prepared(tmp_path / "prepared", splits(), CLASSES)
    labels = np.load(prepared / "train" / "labels.npy")
    labels[0] = len(CLASSES)  # a class id classes.json does not have
    np.save(prepared / "train" / "labels.npy", labels)
    err, _ = fails(tmp_path, prepared, capsys, "labels_in_classes")
    assert "labels_match_index" in err  # index.csv still says cat


def test_a_shifted_label_array_is_caught(tmp_path, capsys):
    prepared = write_prepared(tmp_path / "prepared", splits(), CLASSES)
    labels = np.load(prepared / "val" / "labels.npy")
    np.save(prepared / "val" / "labels.npy", np.roll(labels, 1))  # off by one row
    err, summary = fails(tmp_path, prepared, capsys, "labels_match_index")
    check = next(c for c in summary["checks"] if c["name"] == "labels_match_index")
    assert check["unexpected"] == 3  # the first row of each class takes the previous label
    assert "split=val" in err


def test_a_class_missing_from_val_is_caught(tmp_path, capsys):
    data = splits()
    images, labels = data["val"]
    keep = labels != 2
    data["val"] = (images[keep], labels[keep])
    err, _ = fails(tmp_path, data, capsys, "class_in_every_split")
    assert "split=val, class_name=fox" in err


def test_an_image_in_train_and_test_is_caught_with_its_hash_and_files(tmp_path, capsys):
    data = splits()
    data["test"][0][3] = data["train"][0][5]  # the same pixels in two splits
    err, _ = fails(tmp_path, data, capsys, "leakage_across_splits")
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(data["train"][0][5])).hexdigest()
    # one example per leaking image: its hash, then every copy with split, index and file
    assert f"sha256={digest}, copies=test #3: test/3.png | train #5: train/5.png" in err


def test_a_constant_image_is_caught(tmp_path, capsys):
    data = splits()
    data["train"][0][7] = 0  # all black
    err, _ = fails(tmp_path, data, capsys, "not_constant")
    assert "source=train/7.png" in err


def test_a_class_below_the_minimum_is_caught(tmp_path, capsys):
    data = splits()
    images, labels = data["test"]
    keep = np.ones(len(labels), bool)
    keep[np.flatnonzero(labels == 1)[:2]] = False  # dog: 2 test images, minimum 3
    data["test"] = (images[keep], labels[keep])
    err, _ = fails(tmp_path, data, capsys, "min_per_class", min_class_ratio=0.0)
    assert "split=test, class_name=dog" in err


def test_a_split_of_another_shape_is_caught(tmp_path, capsys):
    data = splits()
    data["val"] = (random_images(len(data["val"][1]), SIZE + 2, seed=9), data["val"][1])
    fails(tmp_path, data, capsys, "one_shape")


def test_grayscale_images_are_caught(tmp_path, capsys):
    data = splits()
    data["test"] = (data["test"][0][..., :1], data["test"][1])  # (N, H, W, 1)
    err, _ = fails(tmp_path, data, capsys, "rgb")
    assert "split=test" in err


def test_too_many_unreadable_files_are_caught(tmp_path, capsys):
    bad = [("train", f"train/broken{i}.jpg", "UnidentifiedImageError") for i in range(2)]
    fails(tmp_path, splits(), capsys, "quarantine_share", quarantined=bad)
    code, *_ = run(
        tmp_path / "lenient", splits(), capsys, quarantined=bad, max_quarantine_share=0.2
    )
    assert code == 0  # 2 of 20 train files is within 0.2


def test_duplicates_within_a_split_warn_but_do_not_stop(tmp_path, capsys):
    data = splits()
    data["train"][0][1] = data["train"][0][0]  # same class, same split
    code, out, err, summary = run(tmp_path, data, capsys)
    assert code == 0, err
    assert summary["passed"] is True and summary["warnings"] == ["duplicates_within_split"]
    assert "FAIL    warning" in out


@pytest.mark.slow
def test_the_embedded_digits_dataset_passes_without_touching_the_network(tmp_path, monkeypatch):
    from tasks.fetch import fetch
    from tasks.prepare import prepare

    data = section(
        "data",
        raw_dir=str(tmp_path / "raw"),
        prepared_dir=str(tmp_path / "prepared"),
        cache_dir=str(tmp_path / "downloads"),
    )
    fetch(data=data)
    prepare(data=data, cfg=section("prepare"))
    tried = []
    real_connect = socket.socket.connect

    def connect(sock, address):  # record, and refuse, anything but loopback
        host = address[0] if isinstance(address, tuple) else str(address)
        if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
            tried.append(address)
            raise OSError("network disabled in this test")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    report = validate(
        prepared_dir=Path(data.prepared_dir),
        cfg=section("validate", expectations_dir=str(ROOT / "expectations")),
        docs_dir=tmp_path / "docs",
    )
    assert report.passed, [(o.name, o.observed, o.examples) for o in report.failed]
    assert report.warnings == []
    assert report.rows["images"] == 1797 and report.rows["classes"] == 30
    assert tried == []


def test_an_index_without_a_column_or_rows_fails_as_schema_not_as_a_crash(tmp_path, capsys):
    prepared = write_prepared(tmp_path / "prepared", splits(), CLASSES)
    index = pd.read_csv(prepared / "index.csv")
    index.drop(columns=["sha256"]).iloc[:-2].to_csv(prepared / "index.csv", index=False)
    err, summary = fails(tmp_path, prepared, capsys, "columns_present")
    assert "missing {sha256}" in err
    assert "source_for_every_image" in summary["failed"]  # the 2 images without an index row
    leak = next(c for c in summary["checks"] if c["name"] == "leakage_across_splits")
    assert not leak["success"] and "does not exist" in leak["error"]  # failed, not skipped


def test_a_malformed_hash_in_the_index_is_caught(tmp_path, capsys):
    prepared = write_prepared(tmp_path / "prepared", splits(), CLASSES)
    index = pd.read_csv(prepared / "index.csv", dtype={"sha256": str})
    index.loc[3, "sha256"] = "not-a-hash"
    index.to_csv(prepared / "index.csv", index=False)
    err, _ = fails(tmp_path, prepared, capsys, "sha256_format")
    assert "sha256=not-a-hash" in err
