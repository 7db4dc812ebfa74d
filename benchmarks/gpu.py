"""GPU throughput of our model at 224 px, against NVIDIA's published ResNet-50 reference.

    python -m benchmarks gpu                       # defaults: GPU scale if one is visible
    python -m benchmarks.gpu --seconds 20 --peak-tflops 989   # e.g. H100/H200 dense bf16

Synthetic uint8 images held in memory, our own model (uint8 in, resize + preprocessing
inside, tasks/model.py), `train.mixed_precision`/`xla`/`distribute` on `auto`
(tasks/hardware.py). One table: training images/s with the head only, conv5 unfrozen and
everything unfrozen; inference images/s; the first step's compile time; peak device memory;
the dtype policy and XLA state actually used; the ratio to the reference (NVIDIA
DeepLearningExamples TF ResNet-50 v1.5, 1x A100 80GB, AMP + XLA, batch 256: 2,375 img/s
training, 3,941 img/s inference) and, with --peak-tflops, to the device's bf16 peak
(~24.6 GFLOP per training image at 224 px: 3 x 8.2 forward).

Then the input pipeline: our `array_dataset` over the real prepared data (memory-mapped
uint8, resized on the device) vs the same number of synthetic images in memory; a ratio
near 1 says the pipeline keeps the device fed.

Without a GPU it runs at toy scale (32 px, batch 8, 1 s per measurement) so CI exercises
every path; the ratios are then meaningless and the table says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks._util import ROOT, table

REFERENCE_TRAIN, REFERENCE_INFER = 2375.0, 3941.0  # img/s, 1x A100, AMP + XLA, batch 256
GFLOP_PER_TRAIN_IMAGE = 24.6  # ResNet-50 at 224 px, forward + backward
CLASSES = 10
DEPTHS = ("head", "conv5", "all")  # trainable: the head only, conv5 + head, everything


@dataclass(frozen=True)
class Scale:
    image_size: int
    batch: int
    seconds: float
    toy: bool


def scale_for(gpus: int, *, seconds: float | None, batch: int | None, image_size: int | None):
    toy = gpus == 0
    return Scale(
        image_size=image_size or (32 if toy else 224),
        batch=batch or (8 if toy else 256),
        seconds=seconds if seconds is not None else (1.0 if toy else 20.0),
        toy=toy,
    )


def rate(step: Callable[[], object], *, images: int, seconds: float) -> tuple[float, float]:
    """(first call's seconds, images/s of the calls after it, median over 1-s windows)."""
    start = time.perf_counter()
    step()  # traces and compiles
    first = time.perf_counter() - start
    step()  # warm-up after compile
    windows, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or not windows:
        n, w0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - w0 < min(1.0, seconds):
            step()
            n += 1
        windows.append(n * images / (time.perf_counter() - w0))
    return first, statistics.median(windows)


def peak_memory_mib(gpus: int) -> float | None:
    if not gpus:
        return None
    import tensorflow as tf

    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def reset_memory(gpus: int) -> None:
    if gpus:
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats("GPU:0")


def train_rows(s: Scale, plan, strategy, depths: tuple[str, ...]) -> list[dict]:
    """Training images/s per depth of unfreezing (one compiled model each), then inference."""
    import keras

    from tasks.model import backbone_of, build_model, freeze, unfreeze

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (s.batch, s.image_size, s.image_size, 3), dtype=np.uint8)
    y = keras.utils.to_categorical(rng.integers(0, CLASSES, s.batch), CLASSES)
    rows = []
    for depth in depths:
        with strategy.scope():
            model = build_model(
                num_classes=CLASSES, input_size=s.image_size, image_size=s.image_size
            )
            base = backbone_of(model)
            if depth == "head":
                freeze(base)
            else:
                unfreeze(base, depth)
            model.compile(
                optimizer=keras.optimizers.Adam(1e-4),
                loss="categorical_crossentropy",
                jit_compile=plan.xla,
            )
        reset_memory(plan.gpus)
        compile_s, per_s = rate(
            lambda m=model: m.train_on_batch(x, y), images=s.batch, seconds=s.seconds
        )
        loss = float(model.train_on_batch(x, y))
        rows.append(
            {
                "what": f"train, {depth} trainable",
                "img/s": per_s,
                "compile_s": compile_s,
                "peak": peak_memory_mib(plan.gpus),
                "xla": bool(model.jit_compile),
                "finite": bool(np.isfinite(loss)),
                "ref": REFERENCE_TRAIN if depth == "all" else None,
            }
        )
    infer = model.predict_on_batch  # the last (all unfrozen) model, inference mode
    reset_memory(plan.gpus)
    compile_s, per_s = rate(lambda: infer(x), images=s.batch, seconds=s.seconds)
    rows.append(
        {
            "what": "inference",
            "img/s": per_s,
            "compile_s": compile_s,
            "peak": peak_memory_mib(plan.gpus),
            "xla": bool(model.jit_compile),
            "finite": True,
            "ref": REFERENCE_INFER,
        }
    )
    return rows


def pipeline_row(s: Scale, plan, strategy, root: Path) -> list | None:
    """Head-only training fed by array_dataset over a prepared set vs synthetic in memory."""

    from tasks.dataset import open_prepared
    from tasks.model import backbone_of, build_model, freeze
    from tasks.training import array_dataset

    if not (root / "dataset.json").is_file():
        return None
    p = open_prepared(root)
    x, y = p.images("train"), p.labels("train")
    steps = max(2, min(len(x) // s.batch, 20))
    rng = np.random.default_rng(0)
    synthetic = rng.integers(0, 256, (s.batch * steps, *x.shape[1:]), dtype=np.uint8)
    results = {}
    for name, xs in (("prepared", x), ("synthetic", synthetic)):
        ys = y[: len(xs)] if name == "prepared" else rng.integers(0, len(p.classes), len(xs))
        ds = array_dataset(xs, ys, num_classes=len(p.classes), batch_size=s.batch)
        with strategy.scope():
            model = build_model(
                num_classes=len(p.classes), input_size=x.shape[1], image_size=s.image_size
            )
            freeze(backbone_of(model))
            model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=plan.xla)
        model.fit(ds.take(1), epochs=1, verbose=0)  # compile
        start = time.perf_counter()
        model.fit(ds.take(steps), epochs=1, verbose=0)
        results[name] = steps * s.batch / (time.perf_counter() - start)
    ratio = results["prepared"] / results["synthetic"]
    return [
        f"input pipeline, {x.shape[1]} px stored -> {s.image_size} px on device",
        f"{results['prepared']:.0f} vs {results['synthetic']:.0f} img/s",
        f"{ratio:.2f}",
    ]


def format_rows(rows: list[dict], *, s: Scale, peak_tflops: float | None) -> list[list]:
    toy = s.toy
    gflop = GFLOP_PER_TRAIN_IMAGE * (s.image_size / 224) ** 2  # convolutions scale with pixels
    out = []
    for r in rows:
        ref = f"{r['img/s'] / r['ref']:.2f}" if r["ref"] and not toy else "-"
        tflops = r["img/s"] * gflop / 1000 if r["what"].startswith("train") else None
        of_peak = f"{tflops / peak_tflops:.0%}" if tflops and peak_tflops and not toy else "-"
        out.append(
            [
                r["what"],
                f"{r['img/s']:.1f}",
                f"{r['compile_s']:.1f}",
                f"{r['peak']:.0f}" if r["peak"] is not None else "n/a (CPU)",
                "on" if r["xla"] else "off",
                ref,
                f"{tflops:.1f}" if tflops else "-",
                of_peak,
            ]
        )
    return out


def run(
    *,
    seconds: float | None = None,
    batch: int | None = None,
    image_size: int | None = None,
    peak_tflops: float | None = None,
    depths: tuple[str, ...] = DEPTHS,
    xla: str = "auto",
    prepared: Path = ROOT / "data" / "prepared",
) -> int:
    from tasks import hardware

    plan, strategy = hardware.setup(mixed_precision="auto", xla=xla, distribute="auto")
    s = scale_for(plan.gpus, seconds=seconds, batch=batch, image_size=image_size)
    import keras

    print(f"device: {plan}; dtype policy in use: {keras.mixed_precision.global_policy().name}")
    print(
        f"scale: {s.image_size} px, global batch {s.batch}, {s.seconds:g} s per measurement"
        + (" (TOY: no GPU visible, ratios not meaningful)" if s.toy else "")
    )
    rows = train_rows(s, plan, strategy, depths)
    headers = [
        "measure",
        "img/s",
        "first step s",
        "peak MiB",
        "XLA",
        "x reference",
        "TFLOPS",
        "of peak",
    ]
    print(table(headers, format_rows(rows, s=s, peak_tflops=peak_tflops)))
    pipe = pipeline_row(s, plan, strategy, prepared)
    if pipe:
        print(table(["measure", "ours vs in-memory", "ratio"], [pipe]))
    else:
        print(f"input pipeline: no prepared data in {prepared} (`dvc repro prepare`); skipped")
    bad = [r["what"] for r in rows if not r["finite"]]
    if bad:
        print(f"error: loss is not finite for {bad} under {plan.policy}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, help="per measurement (GPU 20, CPU 1)")
    parser.add_argument("--batch", type=int, help="global batch (GPU 256, CPU 8)")
    parser.add_argument("--image-size", type=int, help="px the model sees (GPU 224, CPU 32)")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak")
    parser.add_argument("--depths", default=",".join(DEPTHS), help="trainable parts to time")
    parser.add_argument("--xla", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--prepared", type=Path, default=ROOT / "data" / "prepared")
    args = parser.parse_args([] if argv is None and __name__ != "__main__" else argv)
    depths = tuple(d for d in args.depths.split(",") if d)
    if unknown := set(depths) - set(DEPTHS):
        parser.error(f"--depths: {sorted(unknown)}; choose from {', '.join(DEPTHS)}")
    code = run(
        seconds=args.seconds,
        batch=args.batch,
        image_size=args.image_size,
        peak_tflops=args.peak_tflops,
        depths=depths,
        xla=args.xla,
        prepared=args.prepared,
    )
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
