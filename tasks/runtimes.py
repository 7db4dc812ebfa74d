"""One way to run every model format: (N, H, W, 3) uint8 images -> (N, C) float32 probabilities.

    keras        model.keras, loaded in safe mode (tasks.model.load_model)
    saved_model  saved_model/, the `serving_default` signature via tf.saved_model.load
    onnx         model.onnx, ONNX Runtime on the CPU
    tflite       model.tflite, the LiteRT interpreter (ai_edge_litert)

The export stage checks each artifact against Keras with these, and `tasks.predict` serves
with them, so what was checked is what runs. Heavy runtimes are imported only when used.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks import calibration
from tasks.common import UserError
from tasks.layout import MODEL, ONNX_MODEL, SAVED_MODEL, TFLITE_MODEL

EXPORT_FORMATS = ("saved_model", "onnx", "tflite")  # what the export stage can write
FORMATS = ("keras", *EXPORT_FORMATS)
FILE_OF = {"keras": MODEL, "saved_model": SAVED_MODEL, "onnx": ONNX_MODEL, "tflite": TFLITE_MODEL}
# the SavedModel's serving signature, as Keras' model.export(format="tf_saved_model") names it
SIGNATURE, SIGNATURE_INPUT, SIGNATURE_OUTPUT = "serving_default", "image", "output_0"


@dataclass(frozen=True)
class Runtime:
    format: str
    input_size: int  # images must be (N, input_size, input_size, 3) uint8
    predict: Callable[[np.ndarray], np.ndarray]  # one batch -> (N, C) float32


def load_runtime(fmt: str, path: Path, *, temperature: float = 1.0) -> Runtime:
    """Open the artifact `path` of format `fmt`; a clear error if it cannot be run.

    `temperature`: scale the probabilities by it (tasks/calibration.py); for a .keras model,
    whose train.json records it. Exported graphs have it built in: leave it at 1.0.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown model format {fmt!r}; one of {', '.join(FORMATS)}")
    if not path.exists():
        raise UserError(f"{path}: {fmt} model not found")
    try:
        rt = {"keras": _keras, "saved_model": _saved_model, "onnx": _onnx, "tflite": _tflite}[fmt](
            path
        )
    except UserError:
        raise
    except Exception as e:  # a truncated or foreign file: each runtime raises its own kind
        first = (str(e).strip().splitlines() or ["no detail"])[0][:300]
        raise UserError(f"{path}: cannot load it as {fmt} ({type(e).__name__}: {first})") from None
    if temperature == 1.0:
        return rt
    return Runtime(
        rt.format, rt.input_size, lambda x: calibration.scale(rt.predict(x), temperature)
    )


def predict_batches(rt: Runtime, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, C) float32 probabilities, `batch_size` images per call."""
    out = [
        rt.predict(np.ascontiguousarray(images[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)


def keras_runtime(model) -> Runtime:
    """A loaded Keras model as a Runtime (the reference every export is checked against)."""
    return Runtime(
        "keras", int(model.input_shape[1]), lambda x: np.asarray(model.predict_on_batch(x))
    )


def _keras(path: Path) -> Runtime:
    from tasks.model import load_model

    return keras_runtime(load_model(path))


def _saved_model(path: Path) -> Runtime:
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    size = int(fn.structured_input_signature[1][SIGNATURE_INPUT].shape[1])
    return Runtime(
        "saved_model",
        size,
        lambda x: fn(**{SIGNATURE_INPUT: tf.constant(x)})[SIGNATURE_OUTPUT].numpy(),
    )


def _onnx(path: Path) -> Runtime:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()  # image: uint8 (batch, S, S, 3)
    return Runtime("onnx", int(inp.shape[1]), lambda x: session.run(None, {inp.name: x})[0])


def _tflite(path: Path) -> Runtime:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count())
    (inp,) = interpreter.get_input_details()  # shape_signature (-1, S, S, 3) uint8
    out = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def predict(x: np.ndarray) -> np.ndarray:
        if shape[0] != x.shape:  # the batch size changed: re-plan the tensors
            interpreter.resize_tensor_input(inp["index"], x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out).copy()

    return Runtime("tflite", int(inp["shape_signature"][1]), predict)


def pointer_exports(
    info: dict, *, prefix: str, folders: dict[str, dict[str, str]] | None = None
) -> dict[str, dict]:
    """export.json -> the `exports` entry of champion.json: {format: {path, sha256, speed}}.

    `prefix` is where the model's export folder was published (runs/<run_id>/exports/<model>);
    `tasks.predict --model champion` downloads `path` and checks it against `sha256`. A folder
    format (saved_model) also lists its files, `folders[fmt]` {relative path: sha256}, so it
    can be downloaded file by file and each file checked.
    """
    folders = folders or {}
    return {
        fmt: {
            "path": f"{prefix}/{entry['file']}",
            "sha256": entry["sha256"],
            "input_size": info["input_size"],  # the uint8 side it takes (tasks.serving request)
            "latency_ms": entry["latency_ms"],
            "images_per_s": entry["images_per_s"],
            **({"files": folders[fmt]} if fmt in folders else {}),
        }
        for fmt, entry in info["formats"].items()
    }
