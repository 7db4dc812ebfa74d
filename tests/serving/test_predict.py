"""`python -m tasks.predict`: images in, the model's top-k labels out, models verified first."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tasks import calibration
from tasks.common import file_digest, run_main
from tasks.images import decode, fit
from tasks.layout import CHAMPION
from tests.serving.serving_helpers import CLASSES, TEMPERATURE, class_images, make_project

pytestmark = pytest.mark.slow  # TensorFlow and a model load: ~15 s on a loaded machine


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("predict"))


@pytest.fixture(scope="module")
def keras_model(project: Path):
    from tasks.model import load_model

    return load_model(project / "models" / "fine_tune" / "model.keras")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """A folder tree of PNGs, one CMYK JPEG, one corrupt file and one non-image."""
    root = tmp_path_factory.mktemp("shots")
    images, _ = class_images(6, seed=5)
    (root / "sub").mkdir()
    for i, img in enumerate(images[:5]):
        Image.fromarray(img).save(root / ("sub" if i % 2 else ".") / f"img{i}.png")
    Image.fromarray(images[5]).convert("CMYK").save(root / "cmyk.jpg")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.txt").write_text("not an image")
    return root


def predict(tmp_path: Path, project: Path, *args: str) -> Path:
    from tasks.predict import main

    out = tmp_path / "predictions.csv"
    params = ["--params", str(project / "params.yaml"), "--cache-dir", str(tmp_path / "cache")]
    run_main(lambda: main([*args, "--out", str(out), *params]))
    return out


def expected_top1(model, files: list[Path]) -> list[str]:
    images = np.stack([fit(decode(f), 16, "squash") for f in files])
    return [CLASSES[i] for i in model.predict(images, verbose=0).argmax(axis=1)]


def test_predict_a_folder_gives_top_k_rows_and_keras_top1(
    tmp_path, project, keras_model, shots, capsys
) -> None:
    out = predict(tmp_path, project, str(shots), "--model", str(project / "models/fine_tune"))
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "label_1", "prob_1", "label_2", "prob_2", "label_3", "prob_3"]
    paths = [Path(r["path"]) for r in rows]
    assert sorted(p.name for p in paths) == ["cmyk.jpg", *(f"img{i}.png" for i in range(5))]
    assert [r["label_1"] for r in rows] == expected_top1(keras_model, paths)
    for r in rows:
        probs = [float(r[f"prob_{k}"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
    assert "skipped " + str(shots / "broken.png") in capsys.readouterr().err


def test_predict_on_the_prepared_test_images_reproduces_evaluate(tmp_path, project) -> None:
    """What is served is what was evaluated: the test split written out as image files,
    decoded by predict as prepare decodes, gives evaluate's labels and (calibrated) probs."""
    from tasks import evaluate
    from tasks.dataset import open_prepared

    images = np.asarray(open_prepared(project / "prepared").images("test"))
    files = tmp_path / "test"
    files.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(files / f"{i:03d}.png")
    argv = sys.argv
    sys.argv = ["tasks.evaluate", "--params", str(project / "params.yaml")]
    sys.argv += [
        "--set",
        f"evaluate.out_dir={tmp_path / 'metrics'}",
        "--set",
        "evaluate.models=[fine_tune]",
    ]
    try:
        run_main(evaluate.main)
    finally:
        sys.argv = argv
    evaluated = np.load(tmp_path / "metrics/details/fine_tune/probs.npy")  # (N, C), raw
    metrics = json.loads((tmp_path / "metrics/metrics.json").read_text())["fine_tune"]
    assert metrics["temperature"] == TEMPERATURE

    out = predict(tmp_path, project, str(files), "--model", str(project / "models/fine_tune"))
    rows = sorted(csv.DictReader(out.open()), key=lambda r: r["path"])
    assert len(rows) == len(images) == len(evaluated)
    served = np.zeros_like(evaluated)
    for i, r in enumerate(rows):
        for k in (1, 2, 3):
            served[i, CLASSES.index(r[f"label_{k}"])] = float(r[f"prob_{k}"])
    np.testing.assert_array_equal(served.argmax(1), evaluated.argmax(1))
    np.testing.assert_allclose(served, calibration.scale(evaluated, TEMPERATURE), atol=1e-5)
    assert np.abs(served - evaluated).max() > 1e-3  # the temperature was applied


def test_globs_and_jsonl(tmp_path, project, shots) -> None:
    from tasks.predict import main

    out = tmp_path / "p.jsonl"
    argv = [str(shots / "**" / "img*.png"), "--model", str(project / "models/fine_tune")]
    main([*argv, "--top-k", "1", "--out", str(out), "--params", str(project / "params.yaml")])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and set(rows[0]) == {"path", "label_1", "prob_1"}


def publish_locally(project: Path, dest: Path) -> Path:
    """A published run and champion.json laid out as tasks/publish.py writes them."""
    model = dest / "runs" / "r1" / "models" / "fine_tune" / "model.keras"
    model.parent.mkdir(parents=True)
    shutil.copyfile(project / "models" / "fine_tune" / "model.keras", model)
    pointer = {
        "run_id": "r1",
        "model": "runs/r1/models/fine_tune/model.keras",
        "model_sha256": file_digest(model),
        "classes": ["c0", "c1", "c2"],  # the champion's own names win over the local ones
        "temperature": TEMPERATURE,
    }
    (dest / CHAMPION).write_text(json.dumps(pointer))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["publish"]["destination"] = str(dest)
    (dest / "params.yaml").write_text(yaml.safe_dump(params))
    return model


def test_champion_is_verified_cached_and_tampering_refused(
    tmp_path, project, keras_model, shots, capsys
) -> None:
    dest = tmp_path / "published"
    model = publish_locally(project, dest)
    pngs = sorted(shots.rglob("img*.png"))
    out = predict(tmp_path, dest, *map(str, pngs))  # --model champion is the default
    rows = list(csv.DictReader(out.open()))
    want = [f"c{CLASSES.index(c)}" for c in expected_top1(keras_model, pngs)]
    assert [r["label_1"] for r in rows] == want
    raw = keras_model.predict(np.stack([fit(decode(f), 16, "squash") for f in pngs]), verbose=0)
    top = calibration.scale(raw, TEMPERATURE).max(axis=1)  # the pointer's temperature applied
    np.testing.assert_allclose([float(r["prob_1"]) for r in rows], top, atol=1e-5)
    cached = list((tmp_path / "cache").rglob("model.keras"))
    assert [p.parent.name for p in cached] == [file_digest(model)]

    with model.open("ab") as f:  # the published model changes behind the pointer's back
        f.write(b"\0")
    shutil.rmtree(tmp_path / "cache")
    out.unlink()
    with pytest.raises(SystemExit) as e:
        predict(tmp_path, dest, str(pngs[0]))
    assert e.value.code == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "sha256 does not match champion.json; refusing" in err
    assert not list((tmp_path / "cache").rglob("model.keras"))  # nothing unverified is kept


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nowhere/*.png"], "nowhere/*.png: no such image file"),
        (
            ["{shots}/broken.png", "--model", "{model}"],
            "none of the 1 input files could be read as an image",
        ),
        (["{shots}", "--model", "{shots}/notes.txt"], "not a model file"),
        (["{shots}", "--model", "missing.keras"], "--model missing.keras: no such file"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, project, shots, capsys, args, message) -> None:
    args = [a.format(shots=shots, model=project / "models/fine_tune") for a in args]
    with pytest.raises(SystemExit) as e:
        predict(tmp_path, project, *args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: ") and message in err
    assert "Traceback" not in err


def test_champion_exports_auto_picks_the_fastest_and_verifies_it(
    tmp_path, project, keras_model, shots, capsys
) -> None:
    from tasks.export import export_model
    from tasks.runtimes import pointer_exports

    dest = tmp_path / "published"
    publish_locally(project, dest)
    folder = dest / "runs" / "r1" / "exports" / "fine_tune"
    folder.mkdir(parents=True)
    pngs = sorted(shots.rglob("img*.png"))
    images, _ = class_images(4, seed=3)
    info = export_model(
        model_file=project / "models" / "fine_tune" / "model.keras",
        out=folder,
        formats=["onnx", "tflite"],
        images=images,
        names=["a", "b", "c", "d"],
        classes=CLASSES,
        atol=1e-4,
        repeats=1,
        batch=4,
    )
    champion = json.loads((dest / CHAMPION).read_text())
    champion["exports"] = pointer_exports(info, prefix="runs/r1/exports/fine_tune")
    champion["exports"]["tflite"]["images_per_s"] = 1e9  # the fastest: auto must take it
    (dest / CHAMPION).write_text(json.dumps(champion))

    out = predict(tmp_path, dest, *map(str, pngs))
    assert "(tflite model" in capsys.readouterr().out
    want = [f"c{CLASSES.index(c)}" for c in expected_top1(keras_model, pngs)]
    assert [r["label_1"] for r in csv.DictReader(out.open())] == want

    (folder / "model.onnx").write_bytes(b"not the exported file")
    with pytest.raises(SystemExit):
        predict(tmp_path, dest, str(pngs[0]), "--format", "onnx")
    assert "model.onnx: sha256 does not match champion.json" in capsys.readouterr().err


def test_a_published_run_folder_is_a_model(tmp_path, project, keras_model, shots) -> None:
    dest = tmp_path / "published"
    model = publish_locally(project, dest)
    manifest = {
        "run_id": "r1",
        "model": "runs/r1/models/fine_tune",
        "classes": CLASSES,
        "files": [{"path": "models/fine_tune/model.keras", "sha256": file_digest(model)}],
    }
    (dest / "runs" / "r1" / "manifest.json").write_text(json.dumps(manifest))
    pngs = sorted(shots.rglob("img*.png"))
    out = predict(tmp_path, project, *map(str, pngs), "--model", str(dest / "runs" / "r1"))
    assert [r["label_1"] for r in csv.DictReader(out.open())] == expected_top1(keras_model, pngs)


def test_s3_images_and_an_s3_champion(tmp_path, project, keras_model, shots, s3_server, capsys):
    s3 = s3_server.client()
    s3.create_bucket(Bucket="data")
    s3.create_bucket(Bucket="pub")
    pngs = sorted(shots.rglob("img*.png"))
    for p in pngs:
        s3.upload_file(str(p), "data", f"shots/{p.parent.name}/{p.name}")
    local = tmp_path / "published"
    model = publish_locally(project, local)
    s3.upload_file(str(model), "pub", "team/runs/r1/models/fine_tune/model.keras")
    s3.upload_file(str(local / CHAMPION), "pub", f"team/{CHAMPION}")
    params = yaml.safe_load((local / "params.yaml").read_text())
    params["data"]["s3_endpoint_url"] = s3_server.endpoint_url
    params["publish"] |= {"destination": "s3://pub/team", "endpoint_url": s3_server.endpoint_url}
    (local / "params.yaml").write_text(yaml.safe_dump(params))

    out = predict(tmp_path, local, "s3://data/shots")
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(pngs)  # s3 order: shots/<folder>/<name>, as listed
    by_name = {Path(r["path"]).name: r["label_1"] for r in rows}
    want = expected_top1(keras_model, pngs)
    assert [by_name[p.name] for p in pngs] == [f"c{CLASSES.index(c)}" for c in want]

    s3.put_object(Bucket="pub", Key="team/runs/r1/models/fine_tune/model.keras", Body=b"x")
    shutil.rmtree(tmp_path / "cache")
    with pytest.raises(SystemExit):
        predict(tmp_path, local, "s3://data/shots")
    assert "sha256 does not match champion.json; refusing" in capsys.readouterr().err
