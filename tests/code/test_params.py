"""params.yaml is checked before any work: unknown keys, wrong types, bad ranges."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.common import UserError
from tasks.params import load_params, parse_overrides
from tests.conftest import ROOT


def write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_project_params_load_with_defaults_filled_in():
    p = load_params(ROOT / "params.yaml")
    assert p.data.source == "digits"
    assert p.prepare.image_size == 32
    assert isinstance(p.prepare.exclude, tuple)  # frozen all the way down


@pytest.mark.parametrize(
    "doc, words",
    [
        ({"data": {"sorce": "digits"}}, ["data.sorce", "unknown key", "source"]),
        ({"prepar": {}}, ["prepar", "unknown key", "prepare"]),
        ({"data": {"source": "mnist"}}, ["data.source", "'mnist'", "cifar10", "imagewoof"]),
        ({"prepare": {"fraction": -0.5}}, ["prepare.fraction", "-0.5", "(0, 1]"]),
        ({"prepare": {"fraction": 1.5}}, ["prepare.fraction", "(0, 1]"]),
        ({"prepare": {"image_size": "big"}}, ["prepare.image_size", "'big'", "integer"]),
        ({"prepare": {"image_size": True}}, ["prepare.image_size", "integer"]),
        ({"prepare": {"exclude": "ship"}}, ["prepare.exclude", "list"]),
        ({"prepare": {"val_fraction": 1}}, ["prepare.val_fraction", "[0, 1)"]),
        ({"prepare": {"resize": "zoom"}}, ["prepare.resize", "squash", "crop", "pad"]),
        ({"prepare": {"include": ["a"], "exclude": ["b"]}}, ["prepare.include", "not both"]),
        ({"data": {"source": "folder"}}, ["data.path", "folder source"]),
        ({"data": {"md5": "xyz"}}, ["data.md5", "hex"]),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path, doc, words):
    with pytest.raises(UserError) as e:
        load_params(write(tmp_path, doc))
    for w in words:
        assert w in str(e.value)


def test_overrides_are_parsed_as_yaml_and_checked(tmp_path):
    path = write(tmp_path, {})
    p = load_params(path, parse_overrides(["prepare.exclude=[ship]", "prepare.image_size=64"]))
    assert p.prepare.exclude == ("ship",) and p.prepare.image_size == 64
    with pytest.raises(UserError, match="prepare.max_per_class"):
        load_params(path, parse_overrides(["prepare.max_per_class=0"]))


def test_a_stage_with_bad_params_exits_2_with_one_line_and_writes_nothing(tmp_path):
    path = write(tmp_path, {"data": {"source": "mnist", "raw_dir": str(tmp_path / "raw")}})
    r = subprocess.run(
        [sys.executable, "-m", "tasks.fetch", "--params", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "data.source" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "raw").exists()
