"""Export stage: LiteRT via Keras' own export vs converted from the SavedModel just written.

python -m benchmarks export [REPEATS]

On the real model (ResNet-50 base, random weights, uint8 in at 32 px, as `make run`):
Keras' LiteRT export writes a temporary SavedModel and converts it; the stage converts
the SavedModel it has already written. Alternating repeats, medians, the ratio printed.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(repeats: int = 2) -> None:
    import keras

    from tasks.export import litert_from_saved_model, write_format
    from tasks.model import build_model

    keras.utils.set_random_seed(0)
    model = build_model(num_classes=10, input_size=32, image_size=32)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        saved = root / "saved_model"
        wrote_saved = write_format(model, "saved_model", saved)
        times: dict[str, list[float]] = {"keras litert export": [], "from the SavedModel": []}
        for i in range(repeats):  # alternate: a noisy machine hits both alike
            times["keras litert export"].append(
                write_format(model, "tflite", root / f"k{i}.tflite")
            )
            start = time.perf_counter()
            (root / f"s{i}.tflite").write_bytes(litert_from_saved_model(saved))
            times["from the SavedModel"].append(time.perf_counter() - start)
    base = statistics.median(times["keras litert export"])
    print(f"SavedModel written once: {wrote_saved:.1f} s")
    print(f"{'LiteRT':<22}{'median s':>10}{'min..max':>16}{'ratio':>8}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<22}{med:>10.1f}{f'{min(ts):.1f}..{max(ts):.1f}':>16}{med / base:>8.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
