"""The suites on disk, params and severities decide the verdict; bad suites are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tasks.common import UserError
from tasks.params import section
from tasks.validate import validate
from tests.conftest import ROOT
from tests.data.validation_cases import CLASSES, SIZE, fails, run, splits
from tests.helpers import random_images, write_prepared


def test_severity_in_params_turns_an_error_into_a_warning(tmp_path, capsys):
    data = splits()
    data["train"][0][7] = 0
    code, _, err, summary = run(tmp_path, data, capsys, severity={"not_constant": "warning"})
    assert code == 0, err
    assert summary["warnings"] == ["not_constant"]
    code, _, err, summary = run(
        tmp_path / "cli", data, capsys, args=("--set", "validate.severity.not_constant=warning")
    )
    assert code == 0, err  # the override the failure message suggests works as written


def test_the_suite_json_on_disk_decides_the_verdict(tmp_path, capsys):
    suites = tmp_path / "suites"
    shutil.copytree(ROOT / "expectations", suites)
    code, *_ = run(tmp_path / "as_shipped", splits(), capsys, suites=suites)
    assert code == 0
    spec = json.loads((suites / "images.json").read_text())
    rule = next(e for e in spec["expectations"] if e["meta"]["name"] == "pixel_max_in_range")
    rule["kwargs"]["max_value"] = 200  # noise reaches 255
    (suites / "images.json").write_text(json.dumps(spec))
    fails(tmp_path / "edited", splits(), capsys, "pixel_max_in_range", suites=suites)


def test_a_suite_naming_an_unknown_parameter_fails_before_any_work(tmp_path):
    suites = tmp_path / "suites"
    shutil.copytree(ROOT / "expectations", suites)
    spec = json.loads((suites / "classes.json").read_text())
    spec["expectations"][1]["kwargs"]["min_value"] = {"$PARAMETER": "min_per_klass"}
    (suites / "classes.json").write_text(json.dumps(spec))
    prepared = write_prepared(tmp_path / "prepared", splits(), CLASSES)
    cfg = section("validate", expectations_dir=str(suites))
    with pytest.raises(UserError, match=r"classes.json: unknown parameter.*min_per_klass"):
        validate(prepared_dir=prepared, cfg=cfg, docs_dir=tmp_path / "docs")


def test_severity_for_an_unknown_expectation_is_refused(tmp_path):
    prepared = write_prepared(tmp_path / "prepared", splits(), CLASSES)
    cfg = section(
        "validate",
        expectations_dir=str(ROOT / "expectations"), severity={"class_balanse": "warning"}
    )
    with pytest.raises(UserError, match="validate.severity names .*class_balanse"):
        validate(prepared_dir=prepared, cfg=cfg, docs_dir=tmp_path / "docs")


def test_pixel_stats_are_exact_across_chunk_boundaries(monkeypatch):
    from tasks.validation import tables

    images = random_images(23, SIZE, seed=3)
    images[4] = 7  # constant
    monkeypatch.setattr(tables, "STATS_BYTES", SIZE * SIZE * 3 * 5)  # 5 images per step
    stats = tables.pixel_stats(images)
    flat = images.reshape(len(images), -1)
    np.testing.assert_array_equal(stats["pixel_min"], flat.min(axis=1))
    np.testing.assert_array_equal(stats["pixel_max"], flat.max(axis=1))
    np.testing.assert_allclose(stats["pixel_mean"], flat.mean(axis=1))
    assert stats["pixel_range"][4] == 0 and (np.delete(stats["pixel_range"], 4) > 0).all()


def test_make_run_summary_line_tells_the_verdict(tmp_path, capsys):
    from tasks.validate import verdict

    assert "validation not run" in verdict(tmp_path / "reports")
    data = splits()
    data["train"][0][7] = 0
    run(tmp_path, data, capsys)
    line = verdict(tmp_path / "reports")
    assert line.startswith("validation FAILED") and "failed: not_constant" in line


def test_a_misspelt_expectation_type_is_refused_not_skipped(tmp_path):
    suites = tmp_path / "suites"
    shutil.copytree(ROOT / "expectations", suites)
    spec = json.loads((suites / "images.json").read_text())
    rule = next(e for e in spec["expectations"] if e["meta"]["name"] == "rgb")
    rule["type"] = "expect_column_values_to_be_in_sett"  # GX itself would drop it silently
    (suites / "images.json").write_text(json.dumps(spec))
    prepared = write_prepared(tmp_path / "prepared", splits(), CLASSES)
    with pytest.raises(UserError, match="images.json: rgb: 'expect_column_values_to_be_in_sett'"):
        validate(
            prepared_dir=prepared,
            cfg=section("validate", expectations_dir=str(suites)),
            docs_dir=tmp_path / "docs",
        )


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"min_class_ratio": 2}, "validate.min_class_ratio: 2.0 is out of range"),
        ({"severity": {"not_constant": "fatal"}}, "validate.severity.not_constant: 'fatal'"),
        ({"splits": ["train", "dev"]}, "validate.splits[1]: 'dev' is not allowed"),
    ],
)
def test_a_bad_value_in_params_fails_before_any_work_naming_the_key(
    tmp_path, capsys, override, words
):
    code, out, err, summary = run(tmp_path, splits(), capsys, **override)
    assert code == 2 and words in err
    assert summary == {} and out == ""  # nothing validated, nothing written
