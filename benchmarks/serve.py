"""Serving formats side by side: speed and size of each export against Keras, and which
format `predict --format auto` picks; LiteRT converted two ways.

python -m benchmarks serve [IMAGES]

On models/fine_tune/model.keras and the prepared test images when `make run` has made them,
else on the same model with random weights (ResNet-50 base, uint8 in at 32 px) and random
images. The export stage's own code writes and parity-checks every format, then times each
in its runtime on the same IMAGES (default 512) images: median latency at batch 1 and
images/s at batch 64, 5 repeats each after a warm-up, as ratios to Keras `model.predict`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def inputs(n: int) -> tuple[Path | None, np.ndarray, str]:
    model = ROOT / "models" / "fine_tune" / "model.keras"
    prepared = ROOT / "data" / "prepared"
    if model.is_file() and prepared.is_dir():
        from tasks.dataset import open_prepared

        images = np.asarray(open_prepared(prepared).images("test")[:n])
        return model, images, f"{model.relative_to(ROOT)}, {len(images)} test images"
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return None, images, f"random-weights model (no models/fine_tune), {n} random images"


def main(n: int = 512) -> None:
    import keras

    from tasks.export import export_model, litert_from_saved_model, write_format
    from tasks.model import build_model, load_model
    from tasks.predict import fastest

    model_file, images, what = inputs(n)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if model_file is None:
            keras.utils.set_random_seed(0)
            model_file = root / "model.keras"
            build_model(num_classes=10, input_size=32, image_size=32).save(model_file)
        out = root / "exports"
        out.mkdir()
        info = export_model(
            model_file=model_file,
            out=out,
            formats=["saved_model", "onnx", "tflite"],
            images=images,
            names=[f"#{i}" for i in range(len(images))],
            classes=[str(i) for i in range(10)],
            atol=1e-4,
            repeats=5,
            batch=64,
        )
        model = load_model(model_file)
        start = time.perf_counter()
        write_format(model, "tflite", root / "keras_path.tflite")  # Keras' own LiteRT export
        keras_litert = time.perf_counter() - start
        start = time.perf_counter()
        litert_from_saved_model(out / "saved_model")
        from_saved = time.perf_counter() - start
    print(f"{what}; parity on all {len(images)} images passed")
    k = info["keras"]
    print(
        f"{'format':<12}{'MiB':>7}{'export s':>10}{'latency ms':>12}{'x keras':>9}"
        f"{'img/s @64':>11}{'x keras':>9}"
    )
    print(
        f"{'keras':<12}{'':>7}{'':>10}{k['latency_ms']:>12.2f}{1:>9.2f}"
        f"{k['images_per_s']:>11.1f}{1:>9.2f}"
    )
    for fmt, f in info["formats"].items():
        print(
            f"{fmt:<12}{f['bytes'] / 2**20:>7.1f}{f['export_seconds']:>10.1f}"
            f"{f['latency_ms']:>12.2f}{f['latency_ms'] / k['latency_ms']:>9.2f}"
            f"{f['images_per_s']:>11.1f}{f['images_per_s'] / k['images_per_s']:>9.2f}"
        )
    print(f"predict --format auto picks: {fastest(info['formats'])}")
    print(
        f"LiteRT written: Keras' export {keras_litert:.1f} s, from the SavedModel "
        f"{from_saved:.1f} s (ratio {from_saved / keras_litert:.2f})"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 512)
