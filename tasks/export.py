"""Stage `export`: trained models -> serving formats, each checked against the .keras model.

    python -m tasks.export [--set export.formats=[onnx]] [--set ...]

For every folder in `export.models` (models/fine_tune by default), `export.out_dir/<name>/`:

    saved_model/    TensorFlow SavedModel (TF Serving). One signature, `serving_default`:
                      inputs   image     uint8   (N, S, S, 3)   S = the prepared image size
                      outputs  output_0  float32 (N, C)         class probabilities
                    The probabilities are calibrated: the temperature training fitted on
                    val (train.json's `calibration`) is part of the graph.
                    The model resizes and preprocesses inside, as the .keras model does.
    model.onnx      the same graph for ONNX Runtime (input `image`, same shapes)
    model.tflite    LiteRT (input `serving_default_image:0`, same shapes)
    export.json     per format: bytes, sha256 (a folder's: of its sorted "sha256  path" lines),
                    parity with Keras, CPU latency at batch 1 and throughput at batch N

Parity gate: each artifact, run by its own runtime (tasks/runtimes.py), must give the same
top-1 as the .keras model on every one of the first `export.parity_images` test images and
probabilities within `export.atol`. Else the stage fails naming the format and the worst
image, and `export.out_dir` is left as it was (it is replaced whole, only on success).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks import calibration
from tasks.common import (
    UserError,
    atomic_dir,
    atomic_write_json,
    file_digest,
    run_main,
    tree_digest,
)
from tasks.dataset import open_prepared
from tasks.layout import EXPORT_INFO, MODEL, TRAIN_INFO
from tasks.model import load_model
from tasks.params import params_from_cli
from tasks.runtimes import (
    FILE_OF,
    SIGNATURE,
    SIGNATURE_INPUT,
    SIGNATURE_OUTPUT,
    keras_runtime,
    load_runtime,
    predict_batches,
)

log = logging.getLogger(__name__)

KERAS_FORMAT = {"saved_model": "tf_saved_model", "onnx": "onnx", "tflite": "litert"}


def export_model(
    *,
    model_file: Path,
    out: Path,
    formats: Sequence[str],
    images: np.ndarray,
    names: Sequence[str],
    classes: Sequence[str],
    atol: float,
    repeats: int,
    batch: int,
) -> dict[str, Any]:
    """Write every format of `model_file` into `out`, parity-check and time each one.

    `images` (N, S, S, 3) uint8 are the parity images, `names` what to call each in an error.
    Returns what export.json holds; raises UserError on the first format that fails parity.
    """
    temperature = calibration.temperature_of(_train_info(model_file.parent))
    # every format serves calibrated probabilities: the temperature is part of the graph
    model = calibration.calibrated_model(load_model(model_file), temperature)
    keras_rt = keras_runtime(model)
    reference = predict_batches(keras_rt, images)  # (N, C)
    side = keras_rt.input_size
    info: dict[str, Any] = {
        "model": str(model_file),
        "model_sha256": file_digest(model_file),
        "classes": list(classes),
        "input_size": keras_rt.input_size,
        "temperature": temperature,  # applied inside every exported graph (1.0: none)
        "signature": {
            "name": SIGNATURE,
            "inputs": {SIGNATURE_INPUT: {"dtype": "uint8", "shape": [None, side, side, 3]}},
            "outputs": {SIGNATURE_OUTPUT: {"dtype": "float32", "shape": [None, len(classes)]}},
        },
        "parity": {"images": len(images), "atol": atol},
        "keras": speed(keras_rt.predict, images, repeats=repeats, batch=batch),
        "formats": {},
    }
    for fmt in formats:
        path = out / FILE_OF[fmt]
        written = out / FILE_OF["saved_model"]
        seconds = write_format(model, fmt, path, saved_model=written if written.is_dir() else None)
        rt = load_runtime(fmt, path)
        agreement = parity(fmt, predict_batches(rt, images), reference, names=names, atol=atol)
        info["formats"][fmt] = {
            "file": FILE_OF[fmt],
            "bytes": _size(path),
            "sha256": tree_digest(path),
            "export_seconds": round(seconds, 1),
            "parity": agreement,
            **speed(rt.predict, images, repeats=repeats, batch=batch),
        }
        log.info("%s: %s passed parity (%s)", model_file, fmt, agreement)
    return info


def write_format(model, fmt: str, path: Path, *, saved_model: Path | None = None) -> float:
    """Keras' own export of `model` to `path`; seconds taken. A failure is a UserError.

    LiteRT is converted from `saved_model` when one was just written: Keras' LiteRT export
    would write the same SavedModel again to a temporary folder first (the most costly step).
    """
    start = time.perf_counter()
    try:
        if fmt == "tflite" and saved_model is not None:
            path.write_bytes(litert_from_saved_model(saved_model))
        else:
            model.export(str(path), format=KERAS_FORMAT[fmt], verbose=False)
    except Exception as e:  # a converter missing or failing in this environment
        first = (str(e).strip().splitlines() or ["no detail"])[0][:300]
        raise UserError(
            f"export {fmt}: cannot be produced here ({type(e).__name__}: {first}); "
            f"leave {fmt} out of export.formats to skip it"
        ) from None
    return time.perf_counter() - start


def litert_from_saved_model(saved_model: Path) -> bytes:
    """The converter Keras' LiteRT export runs, on a SavedModel already on disk."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    converter.experimental_enable_resource_variables = True
    return converter.convert()


def parity(
    fmt: str, got: np.ndarray, want: np.ndarray, *, names: Sequence[str], atol: float
) -> dict[str, Any]:
    """Agreement of (N, C) probabilities with Keras'; UserError naming the worst image."""
    delta = np.abs(got - want).max(axis=1)  # (N,)
    flipped = np.flatnonzero(got.argmax(axis=1) != want.argmax(axis=1))
    worst = int(flipped[np.argmax(delta[flipped])]) if flipped.size else int(delta.argmax())
    if flipped.size or delta[worst] > atol:
        what = (
            f"top-1 differs on {flipped.size} of {len(got)} images"
            if flipped.size
            else f"max |delta prob| {delta[worst]:.3g} > export.atol {atol:g}"
        )
        raise UserError(
            f"export {fmt}: parity with the .keras model failed: {what}; worst image "
            f"{names[worst]} (top-1 {int(got[worst].argmax())} vs keras "
            f"{int(want[worst].argmax())}, |delta prob| {delta[worst]:.3g})"
        )
    return {"images": len(got), "top1_equal": len(got), "max_abs_diff": float(delta.max())}


def speed(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, *, repeats: int, batch: int
) -> dict[str, float]:
    """CPU latency (ms, batch 1) and throughput (images/s, batch `batch`), medians."""
    one = np.ascontiguousarray(images[:1])
    many = np.ascontiguousarray(np.resize(images, (batch, *images.shape[1:])))
    return {
        "latency_ms": round(_median_seconds(predict, one, repeats) * 1e3, 2),
        "throughput_batch": batch,
        "images_per_s": round(batch / _median_seconds(predict, many, repeats), 1),
    }


def _median_seconds(predict: Callable, x: np.ndarray, repeats: int) -> float:
    predict(x)  # warm-up: first calls plan or compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train_info(folder: Path) -> dict:
    path = folder / TRAIN_INFO
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _size(path: Path) -> int:
    return (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )


def main() -> None:
    params = params_from_cli(__doc__)
    cfg = params.export
    prepared = open_prepared(params.data.prepared_dir)
    images = prepared.images("test")[: cfg.parity_images]
    if len(images) == 0:
        raise UserError(f"{params.data.prepared_dir}: the test split is empty; nothing to check")
    sources = prepared.index().query("split == 'test'").sort_values("idx")["source"].tolist()
    names = [
        f"test #{i} ({sources[i]})" if i < len(sources) else f"test #{i}"
        for i in range(len(images))
    ]
    with atomic_dir(Path(cfg.out_dir)) as tmp:
        for folder in cfg.models:
            model_file = Path(folder) / MODEL
            out = tmp / Path(folder).name
            if out.exists():
                raise UserError(f"export.models: two folders are named {out.name}; rename one")
            out.mkdir()
            info = export_model(
                model_file=model_file,
                out=out,
                formats=cfg.formats,
                images=np.asarray(images),
                names=names,
                classes=prepared.classes,
                atol=cfg.atol,
                repeats=cfg.latency_repeats,
                batch=cfg.throughput_batch,
            )
            atomic_write_json(out / EXPORT_INFO, info)
            print(summary(folder, info))


def summary(folder: str, info: dict[str, Any]) -> str:
    rows = [
        f"{folder}: keras {info['keras']['latency_ms']} ms, {info['keras']['images_per_s']} img/s"
    ]
    for fmt, f in info["formats"].items():
        rows.append(
            f"  {fmt:<12} {f['bytes'] / 2**20:7.1f} MiB  {f['latency_ms']:8.2f} ms  "
            f"{f['images_per_s']:8.1f} img/s  max |delta| {f['parity']['max_abs_diff']:.2g}"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    run_main(main)
