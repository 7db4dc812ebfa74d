"""The export stage: every format agrees with the .keras model, or the stage fails naming it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tasks import calibration
from tasks.common import run_main
from tasks.layout import EXPORT_INFO, ONNX_MODEL, SAVED_MODEL, TFLITE_MODEL
from tasks.runtimes import load_runtime, predict_batches
from tests.serving.serving_helpers import CLASSES, TEMPERATURE, make_project

pytestmark = pytest.mark.slow  # TensorFlow + three converters: ~30 s on a loaded machine


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny project exported once by the stage's own command line."""
    root = make_project(tmp_path_factory.mktemp("export"))
    run_stage(root)
    return root


def run_stage(root: Path, *sets: str) -> int:
    """`python -m tasks.export --params ... --set ...` in this process (TF is imported once)."""
    from tasks.export import main

    argv = sys.argv
    sys.argv = ["tasks.export", "--params", str(root / "params.yaml")]
    sys.argv += [a for s in sets for a in ("--set", s)]
    try:
        run_main(main)
    except SystemExit as e:
        return int(e.code)
    finally:
        sys.argv = argv
    return 0


def test_every_format_is_written_and_agrees_with_keras(exported: Path) -> None:
    out = exported / "exports" / "fine_tune"
    info = json.loads((out / EXPORT_INFO).read_text())
    assert set(info["formats"]) == {"saved_model", "onnx", "tflite"}
    assert info["classes"] == CLASSES
    assert info["signature"]["inputs"]["image"] == {"dtype": "uint8", "shape": [None, 16, 16, 3]}
    for fmt, name in (("saved_model", SAVED_MODEL), ("onnx", ONNX_MODEL), ("tflite", TFLITE_MODEL)):
        entry = info["formats"][fmt]
        assert (out / name).exists() and entry["file"] == name
        assert entry["parity"] == {
            "images": 12,
            "top1_equal": 12,
            "max_abs_diff": pytest.approx(0, abs=1e-4),
        }
        assert entry["bytes"] > 0 and len(entry["sha256"]) == 64
        assert entry["latency_ms"] > 0 and entry["images_per_s"] > 0


def test_the_artifacts_run_in_their_own_runtimes_like_keras(exported: Path) -> None:
    from tasks.dataset import open_prepared

    images = np.asarray(open_prepared(exported / "prepared").images("test"))
    out = exported / "exports" / "fine_tune"
    keras_file = exported / "models/fine_tune/model.keras"
    raw = predict_batches(load_runtime("keras", keras_file), images)
    want = predict_batches(load_runtime("keras", keras_file, temperature=TEMPERATURE), images)
    # every export serves the calibrated probabilities: softer than the raw ones, same labels
    np.testing.assert_allclose(want, calibration.scale(raw, TEMPERATURE), atol=1e-6)
    assert np.abs(want - raw).max() > 1e-3
    assert json.loads((out / EXPORT_INFO).read_text())["temperature"] == TEMPERATURE
    for fmt, name in (("saved_model", SAVED_MODEL), ("onnx", ONNX_MODEL), ("tflite", TFLITE_MODEL)):
        rt = load_runtime(fmt, out / name)
        assert rt.input_size == 16
        got = predict_batches(rt, images, batch_size=5)  # batch sizes the export never saw
        np.testing.assert_allclose(got, want, atol=1e-4)
        np.testing.assert_array_equal(got.argmax(1), want.argmax(1))


def test_a_tampered_onnx_file_fails_parity_naming_the_format_and_image(
    exported: Path, tmp_path: Path
) -> None:
    import onnx
    from onnx import numpy_helper

    from tasks.common import UserError
    from tasks.export import parity

    model = onnx.load(exported / "exports" / "fine_tune" / ONNX_MODEL)
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(biggest)
    noise = np.random.default_rng(0).normal(0, 1, weights.shape).astype(weights.dtype)
    biggest.CopyFrom(numpy_helper.from_array(weights + noise, biggest.name))
    onnx.save(model, tmp_path / ONNX_MODEL)

    from tasks.dataset import open_prepared

    images = np.asarray(open_prepared(exported / "prepared").images("test"))
    want = predict_batches(load_runtime("keras", exported / "models/fine_tune/model.keras"), images)
    got = predict_batches(load_runtime("onnx", tmp_path / ONNX_MODEL), images)
    names = [f"test #{i}" for i in range(len(images))]
    with pytest.raises(UserError, match=r"^export onnx: parity .* worst image test #\d+"):
        parity("onnx", got, want, names=names, atol=1e-4)


def test_a_failing_format_fails_the_stage_and_leaves_the_old_exports(
    exported: Path, capsys
) -> None:
    # atol 0: the SavedModel runs Keras' own graph (|delta| exactly 0), ONNX Runtime does not
    before = (exported / "exports" / "fine_tune" / EXPORT_INFO).read_text()
    assert run_stage(exported, "export.atol=0.0", "export.formats=[saved_model,onnx]") == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: export onnx: parity with the .keras model failed: max |delta")
    assert "worst image test #" in last and "Traceback" not in err
    assert (exported / "exports" / "fine_tune" / EXPORT_INFO).read_text() == before
    assert not [p for p in (exported).iterdir() if p.name.startswith(".exports.")]


def test_formats_turned_off_are_not_written(exported: Path, tmp_path: Path) -> None:
    assert (
        run_stage(exported, f"export.out_dir={tmp_path / 'only'}", "export.formats=[tflite]") == 0
    )
    out = tmp_path / "only" / "fine_tune"
    assert sorted(p.name for p in out.iterdir()) == [EXPORT_INFO, TFLITE_MODEL]
    assert list(json.loads((out / EXPORT_INFO).read_text())["formats"]) == ["tflite"]


def test_unknown_format_is_one_clear_params_error(exported: Path, capsys) -> None:
    assert run_stage(exported, "export.formats=[coreml]") == 2
    err = capsys.readouterr().err
    assert "export.formats[0]" in err and "'saved_model', 'onnx' or 'tflite'" in err
    assert "Traceback" not in err


def test_a_format_that_cannot_be_produced_fails_naming_it(tmp_path: Path) -> None:
    from tasks.common import UserError
    from tasks.export import write_format

    class NoConverter:  # a Keras model whose LiteRT converter is missing here
        def export(self, path, format, verbose):
            raise ImportError("No module named 'ai_edge_litert'")

    with pytest.raises(UserError, match=r"^export tflite: cannot be produced here .* leave tflite"):
        write_format(NoConverter(), "tflite", tmp_path / TFLITE_MODEL)
