"""params.yaml is checked before any work: unknown keys, wrong types, bad ranges."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from dags.resnet_retrain import run_params
from tasks.common import UserError
from tasks.paramfile import descriptions, parse_overrides, read_raw
from tasks.params import Params, PrepareParams, load_params, params_from_cli, section
from tests.conftest import ROOT
from tests.helpers import params_yaml


def write(tmp_path: Path, doc: dict) -> Path:
    """The project's params.yaml with `doc` merged in."""
    path = tmp_path / "params.yaml"
    path.write_text(params_yaml(doc))
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


FINE_TUNE_LR = "    learning_rate: 1.0e-04  # phase 2"  # the line in the project's params.yaml


@pytest.mark.parametrize(
    "text, value", [("1e-4", 1e-4), ("3e-05", 3e-5), ("1.0e-5", 1e-5), ("5E-1", 0.5)]
)
def test_learning_rates_as_people_write_them_load_as_numbers(tmp_path, text, value):
    project = (ROOT / "params.yaml").read_text()
    assert FINE_TUNE_LR in project
    path = tmp_path / "params.yaml"
    path.write_text(project.replace(FINE_TUNE_LR, f"    learning_rate: {text}  #", 1))
    assert load_params(path).train.fine_tune.learning_rate == value

    p = params_from_cli("stage", ["--set", f"train.fine_tune.learning_rate={text}"])
    assert p.train.fine_tune.learning_rate == value


def test_yaml_1_2_floats_and_what_stays_a_string_or_an_int():
    got = parse_overrides(["a.b=-2E+3", "a.c=1e-4x", "a.d=12", "a.e=[1e-3, 2]", "a.f=.5"])
    assert got == {"a.b": -2000.0, "a.c": "1e-4x", "a.d": 12, "a.e": [0.001, 2], "a.f": 0.5}
    assert isinstance(got["a.d"], int)
    with pytest.raises(UserError, match=r"train.learning_rate: -2000.0 is out of range"):
        load_params(ROOT / "params.yaml", parse_overrides(["train.learning_rate=-2E+3"]))
    with pytest.raises(UserError, match=r"train.fine_tune.learning_rate: '1e-4x' is not a number"):
        load_params(ROOT / "params.yaml", parse_overrides(["train.fine_tune.learning_rate=1e-4x"]))


def test_a_missing_key_or_section_is_named(tmp_path):
    raw = read_raw(ROOT / "params.yaml")
    del raw["prepare"]["seed"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=r"params.yaml: prepare.seed: missing"):
        load_params(path)
    raw["prepare"]["seed"] = 42
    del raw["publish"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=r"params.yaml: publish: missing"):
        load_params(path)


def test_section_is_params_yaml_with_overrides_checked():
    cfg = section("prepare", image_size=16, exclude=("8",))
    assert isinstance(cfg, PrepareParams) and cfg.image_size == 16 and cfg.exclude == ("8",)
    assert cfg.seed == load_params(ROOT / "params.yaml").prepare.seed
    with pytest.raises(UserError, match=r"prepare.image_size: 4 is out of range: must be null"):
        section("prepare", image_size=4)


def test_form_fields_take_type_range_and_description_from_the_model():
    jsonschema = pytest.importorskip("jsonschema")
    params = load_params(ROOT / "params.yaml")
    keys = ("train.units", "train.epochs", "data.source", "data.path", "train.sweep.unfreeze")
    specs = run_params.param_specs(params, keys, descriptions(ROOT / "params.yaml"))
    units = specs["train.units"]["schema"]
    assert units["type"] == "array" and units["items"]["type"] == "integer"
    assert specs["train.epochs"]["schema"] == {"type": "integer", "minimum": 1}
    assert set(specs["data.source"]["schema"]["enum"]) == {
        "digits",
        "cifar10",
        "cifar100",
        "imagewoof",
        "folder",
    }
    for key, spec in specs.items():
        assert spec["description"] and "for this run" not in spec["description"], key
        assert "title" not in json.dumps(spec["schema"]) and "$ref" not in json.dumps(spec), key
        jsonschema.validate(spec["default"], spec["schema"])  # params.yaml's value is allowed
    jsonschema.validate(None, specs["data.path"]["schema"])
    jsonschema.validate([3, "conv4", "all"], specs["train.sweep.unfreeze"]["schema"])
    for key, bad in [
        ("train.epochs", 0),
        ("train.epochs", 2.5),
        ("train.units", ["a"]),
        ("train.sweep.unfreeze", [999]),
        ("data.source", "mnist"),
    ]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, specs[key]["schema"])
    with pytest.raises(ValueError, match="'train.epoch' is not a params.yaml key"):
        run_params.param_specs(params, ("train.epoch",), {})


def test_form_overrides_parse_like_set():
    conf = {"overrides": ["train.fine_tune.learning_rate=1e-4"], "train.epochs": 30}
    got = run_params.overrides_from(conf, {"train.epochs": 30})
    assert got == {"train.fine_tune.learning_rate": 1e-4}
    assert "train.strategy" not in load_params(ROOT / "params.yaml").orchestration.run_params


def model_keys(tp: type = Params, prefix: str = "") -> list[str]:
    """Every dotted key the model declares, sections and subsections included."""
    out = []
    for name, hint in typing.get_type_hints(tp).items():
        out.append(prefix + name)
        if dataclasses.is_dataclass(hint):
            out += model_keys(hint, f"{prefix}{name}.")
    return out


def test_every_key_of_the_model_is_described_by_its_params_yaml_comment():
    described = descriptions(ROOT / "params.yaml")
    keys = model_keys()
    assert "train.fine_tune.learning_rate" in keys and "publish" in keys
    missing = [k for k in keys if not described.get(k)]
    assert not missing, f"give these keys a trailing # comment in params.yaml: {missing}"


def test_form_field_shows_the_keys_params_yaml_comment(tmp_path: Path):
    path = write(tmp_path, {})
    text = path.read_text().replace(
        "train:\n", "train:  # transfer\n", 1
    )  # safe_dump drops comments: add two back by hand
    text = text.replace("  epochs: 30\n", "  epochs: 30  # phase 1, at most\n", 1)
    path.write_text(text)
    specs = run_params.param_specs(load_params(path), ("train.epochs",), descriptions(path))
    assert specs["train.epochs"]["description"] == "phase 1, at most"
    project = descriptions(ROOT / "params.yaml")
    specs = run_params.param_specs(load_params(ROOT / "params.yaml"), ("data.source",), project)
    assert specs["data.source"]["description"] == project["data.source"]
    assert specs["data.source"]["description"].startswith("digits")


def test_a_comment_continues_on_deeper_indented_comment_lines(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "a:\n"
        "  b: 1       # first line,\n"
        "             #   second line\n"
        "  # about c, not b\n"
        "  c: [x, y]  # a list\n"
        "  d: {}\n"
        "# a top-level note\n"
        "e: null      # last\n"
        "             # and more\n"
    )
    assert descriptions(path) == {
        "a.b": "first line, second line",
        "a.c": "a list",
        "e": "last and more",
    }


def test_readme_params_reference_names_every_section_once():
    readme = (ROOT / "README.md").read_text()
    reference = readme[readme.index("## Params reference") : readme.index("## Benchmarks")]
    rows = [
        line.split("|")[1].strip(" `") for line in reference.splitlines() if line.startswith("| `")
    ]
    assert rows == [f.name for f in dataclasses.fields(Params)]
