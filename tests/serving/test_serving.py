"""`python -m tasks.serving`: the champion's SavedModel laid out for TF Serving, and requests."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks import calibration
from tasks.common import file_digest, run_main
from tasks.layout import CHAMPION
from tests.serving.serving_helpers import CLASSES, TEMPERATURE, class_images, make_project
from tests.serving.test_predict import publish_locally

pytestmark = pytest.mark.slow  # TensorFlow, one SavedModel export: ~20 s on a loaded machine


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A champion with a SavedModel export, as publish lays it out."""
    from tasks.export import export_model
    from tasks.runtimes import pointer_exports

    project = make_project(tmp_path_factory.mktemp("serving"))
    dest = project / "published"
    publish_locally(project, dest)
    prefix = "runs/r1/exports/fine_tune"
    (dest / prefix).mkdir(parents=True)
    images, _ = class_images(4, seed=3)
    info = export_model(
        model_file=project / "models" / "fine_tune" / "model.keras",
        out=dest / prefix,
        formats=["saved_model"],
        images=images,
        names=list("abcd"),
        classes=CLASSES,
        atol=1e-4,
        repeats=1,
        batch=4,
    )
    pointer = json.loads((dest / CHAMPION).read_text())
    saved = dest / prefix / "saved_model"
    files = {
        f.relative_to(saved).as_posix(): file_digest(f) for f in saved.rglob("*") if f.is_file()
    }
    pointer["exports"] = pointer_exports(info, prefix=prefix, folders={"saved_model": files})
    pointer["promoted_at"] = "2026-12-01T03:00:00+00:00"
    (dest / CHAMPION).write_text(json.dumps(pointer))
    return dest


def serving(tmp_path: Path, published: Path, *args: str) -> int:
    from tasks.serving import main

    params = ["--params", str(published / "params.yaml")]
    try:
        run_main(lambda: main([*params, *args]))
    except SystemExit as e:
        return int(e.code)
    return 0


def sync(tmp_path: Path, published: Path, base: Path, *extra: str) -> int:
    return serving(
        tmp_path, published, "sync", str(base), "--cache-dir", str(tmp_path / "cache"), *extra
    )


def test_sync_places_the_verified_champion_as_a_new_version(tmp_path, published) -> None:
    import tensorflow as tf

    base = tmp_path / "models" / "resnet_retrain"
    assert sync(tmp_path, published, base) == 0
    version = base / "1796094000"  # 2026-12-01T03:00:00Z: versions grow with promotions
    assert sorted(p.name for p in base.iterdir()) == [version.name]
    assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    assert json.loads((version / "assets.extra" / CHAMPION).read_text())["run_id"] == "r1"
    assert "serving_default" in tf.saved_model.load(str(version)).signatures

    stamp = (version / "saved_model.pb").stat().st_mtime_ns
    assert sync(tmp_path, published, base) == 0  # nothing new: the folder is left alone
    assert (version / "saved_model.pb").stat().st_mtime_ns == stamp

    pointer = json.loads((published / CHAMPION).read_text())
    (published / CHAMPION).write_text(
        json.dumps(pointer | {"run_id": "r2", "promoted_at": "2026-12-08T03:00:00+00:00"})
    )
    try:
        assert sync(tmp_path, published, base, "--keep", "1") == 0
    finally:
        (published / CHAMPION).write_text(json.dumps(pointer))
    assert [p.name for p in base.iterdir()] == ["1796698800"]  # the old version pruned


def test_a_tampered_export_is_refused_and_the_served_versions_stay(
    tmp_path, published, capsys
) -> None:
    base = tmp_path / "base"
    (base / "5").mkdir(parents=True)  # what TF Serving serves now
    pointer = json.loads((published / CHAMPION).read_text())
    files = pointer["exports"]["saved_model"]["files"]
    victim = published / pointer["exports"]["saved_model"]["path"] / next(iter(files))
    original = victim.read_bytes()
    victim.write_bytes(original + b"\0")
    try:
        assert sync(tmp_path, published, base) == 2
    finally:
        victim.write_bytes(original)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "sha256 does not match champion.json; refusing" in err
    assert [p.name for p in base.iterdir()] == ["5"]  # no partial version left behind


def test_watching_survives_a_store_without_a_champion(tmp_path, caplog) -> None:
    from tasks.serving import watch
    from tasks.storage import open_store

    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level(logging.WARNING):
        watch(open_store(str(empty)), tmp_path / "base", cache=tmp_path, keep=2, every=0, rounds=2)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and all("no champion.json yet" in m for m in warned), warned


def test_request_body_fits_the_signature_and_gives_the_models_probabilities(
    tmp_path, published
) -> None:
    import tensorflow as tf

    from tasks.model import load_model

    images, _ = class_images(3, seed=7)
    shots = []
    for i, img in enumerate(images):  # 16 px images, one stretched to 16x40: resized to 16
        im = Image.fromarray(img)
        shots.append(tmp_path / f"shot{i}.png")
        (im.resize((40, 16)) if i == 0 else im).save(shots[-1])
    out = tmp_path / "request.json"
    assert serving(tmp_path, published, "request", *map(str, shots), "--out", str(out)) == 0
    body = json.loads(out.read_text())
    assert body["signature_name"] == "serving_default" and len(body["instances"]) == 3

    pointer = json.loads((published / CHAMPION).read_text())
    saved = tf.saved_model.load(str(published / pointer["exports"]["saved_model"]["path"]))
    fn = saved.signatures[body["signature_name"]]
    spec = fn.structured_input_signature[1]
    assert set(body["instances"][0]) == set(spec)  # every instance names the signature's input
    name = next(iter(spec))
    batch = np.array(
        [inst[name] for inst in body["instances"]], dtype=spec[name].dtype.as_numpy_dtype
    )
    assert spec[name].shape.is_compatible_with(batch.shape)
    served = next(iter(fn(**{name: tf.constant(batch)}).values())).numpy()
    keras = load_model(published / pointer["model"]).predict(batch, verbose=0)
    # TF Serving answers with calibrated probabilities: the temperature is in the graph
    assert pointer["temperature"] == TEMPERATURE
    np.testing.assert_allclose(served, calibration.scale(keras, TEMPERATURE), atol=1e-5)


def test_request_without_a_champion_needs_a_side(tmp_path, published, capsys) -> None:
    empty = tmp_path / "nowhere"
    empty.mkdir()
    Image.fromarray(class_images(1, seed=1)[0][0]).save(tmp_path / "one.png")
    args = ["--destination", str(empty), "request", str(tmp_path / "one.png")]
    assert serving(tmp_path, published, *args, "--out", str(tmp_path / "r.json")) == 2
    assert "no champion SavedModel with its input size; give --size" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    assert (
        serving(tmp_path, published, *args, "--size", "8", "--out", str(tmp_path / "r.json")) == 0
    )
    assert np.array(
        json.loads((tmp_path / "r.json").read_text())["instances"][0]["image"]
    ).shape == (8, 8, 3)
