"""Training: cached features vs the frozen backbone, our input pipeline vs in-memory tensors,
and peak memory on a CIFAR-sized set.

1. The head trained on cached embeddings vs the same epochs through the frozen ResNet-50
   (data/prepared and models/backbone when present, else synthetic data / a random base).
   Target: >= 20x faster per epoch, val accuracy within 1 point.
2. `array_dataset` (memmapped uint8, shuffled index, batches read per step) vs `model.fit`
   on the same images as in-memory numpy, at 32 and 64 px. Target: within 10% images/s.
3. Peak RSS of a child training on a 50,000-image 32x32 memmap at image_size 64.
   Target: < 3 GiB (a float32 copy of the resized set alone would be 2.3 GiB).
4. The source model's train step (ResNet-50 from random weights, BatchNorm learning, 32 px,
   batch 32, what `make run` spends most of its time on) with XLA (`train.xla: auto`) vs
   without, and a head epoch on cached features with vs without. Informational: why XLA
   is on by default on CPU too, except for heads on cached features.

    python -m benchmarks train
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._util import ROOT, alternating, median_spread, ratio_samples, run_measured, table

REPEATS = 5  # samples per side, alternating, after one warm-up each (median and min-max shown)
RSS_LIMIT_MIB = 3072


def _data():
    from tasks.dataset import open_prepared

    root = ROOT / "data" / "prepared"
    if (root / "dataset.json").is_file():
        p = open_prepared(root)
        return (
            p.images("train"),
            p.labels("train"),
            p.images("val"),
            p.labels("val"),
            len(p.classes),
            "data/prepared",
        )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1200, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 1200)
    return x[:1000], y[:1000], x[1000:], y[1000:], 10, "synthetic"


def cached_vs_frozen() -> list[list]:
    import keras

    from tasks import training
    from tasks.features import build_extractor, embed
    from tasks.model import build_backbone, build_head, build_model, freeze

    x, y, vx, vy, k, what = _data()
    weights = ROOT / "models" / "backbone" / "backbone.weights.h5"
    if not weights.is_file():
        keras.utils.set_random_seed(0)
        weights = Path(tempfile.mkdtemp()) / "random.weights.h5"
        build_backbone(None).save_weights(weights)
    size = x.shape[1]
    start = time.perf_counter()
    extractor = build_extractor(weights=weights, input_size=size, image_size=size)
    fx, fvx = embed(extractor, x, batch_size=64), embed(extractor, vx, batch_size=64)
    extract_s = time.perf_counter() - start

    trainers = {}
    for mode in ("cached", "frozen"):
        keras.utils.set_random_seed(0)
        head = build_head(num_classes=k, seed=0)
        if mode == "cached":
            trainer, tx, vxx = head, fx, fvx
        else:
            base = build_backbone(weights)
            freeze(base)
            trainer = build_model(
                num_classes=k, input_size=size, image_size=size, backbone=base, head=head
            )
            tx, vxx = x, vx
        training.compile_model(trainer, optimizer="adam", learning_rate=1e-3)
        ds = training.array_dataset(tx, y, num_classes=k, batch_size=32, shuffle=True)
        val = training.array_dataset(vxx, vy, num_classes=k, batch_size=64)
        trainers[mode] = (trainer, ds, val)

    def epoch(mode: str):
        trainer, ds, _ = trainers[mode]
        return lambda: _timed(lambda: trainer.fit(ds, epochs=1, verbose=0))

    # one epoch a sample; the warm-up epoch traces fit outside the timing
    seconds = alternating({m: epoch(m) for m in trainers}, repeats=REPEATS)
    acc = {m: trainers[m][0].evaluate(trainers[m][2], verbose=0)[1] for m in trainers}
    speedup = ratio_samples(seconds["frozen"], seconds["cached"])
    return [
        [
            f"head epoch ({what}), {REPEATS}+1 epochs each",
            "s/epoch",
            median_spread(seconds["cached"], "{:.3f}"),
            median_spread(seconds["frozen"]),
            median_spread(speedup, "{:.0f}x"),
            ">= 20x",
        ],
        [
            "head val accuracy after them",
            "%",
            f"{100 * acc['cached']:.1f}",
            f"{100 * acc['frozen']:.1f}",
            f"{100 * (acc['cached'] - acc['frozen']):+.1f} pt",
            "within 1 pt",
        ],
        ["one-time feature extraction", "s", f"{extract_s:.1f}", "-", "-", ""],
    ]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def pipeline_vs_in_memory() -> list[list]:
    # a few seconds per sample at either size
    return [_pipeline_row(size=32, n=1024), _pipeline_row(size=64, n=512)]


def _pipeline_row(*, size: int, n: int, k: int = 10) -> list:
    import keras

    from tasks import training
    from tasks.model import build_backbone, build_model, freeze

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, k, n)
    onehot = np.eye(k, dtype=np.float32)[y]
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        mm = np.load(Path(tmp) / "x.npy", mmap_mode="r")
        keras.utils.set_random_seed(0)
        base = build_backbone(None)
        freeze(base)
        model = build_model(num_classes=k, input_size=size, image_size=size, backbone=base)
        training.compile_model(model, optimizer="adam", learning_rate=1e-3)
        ds = training.array_dataset(mm, y, num_classes=k, batch_size=32, shuffle=True)
        fits = {  # img/s of one epoch
            "pipeline": lambda: n / _timed(lambda: model.fit(ds, verbose=0)),
            "in-memory": lambda: (
                n / _timed(lambda: model.fit(x, onehot, batch_size=32, shuffle=True, verbose=0))
            ),
        }
        rates = alternating(fits, repeats=REPEATS)
    return [
        f"images/s at {size} px ({n} images an epoch)",
        "img/s",
        median_spread(rates["pipeline"], "{:.0f}"),
        median_spread(rates["in-memory"], "{:.0f}"),
        median_spread(ratio_samples(rates["pipeline"], rates["in-memory"])),
        ">= 0.90",
    ]


def rss_child(folder: str) -> None:
    """Child process: train a few steps on the 50,000-image memmap at image_size 64."""
    from tasks import training
    from tasks.model import build_backbone, build_model, freeze

    x = np.load(Path(folder) / "x.npy", mmap_mode="r")
    y = np.load(Path(folder) / "y.npy")
    base = build_backbone(None)
    freeze(base)
    model = build_model(num_classes=10, input_size=32, image_size=64, backbone=base)
    training.compile_model(model, optimizer="adam", learning_rate=1e-3)
    ds = training.array_dataset(x, y, num_classes=10, batch_size=64, shuffle=True)
    model.fit(ds, steps_per_epoch=20, epochs=1, verbose=0)


def peak_rss() -> list[list]:
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        x = np.lib.format.open_memmap(
            Path(tmp) / "x.npy", mode="w+", dtype=np.uint8, shape=(50_000, 32, 32, 3)
        )
        for s in range(0, 50_000, 10_000):
            x[s : s + 10_000] = rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8)
        x.flush()
        del x
        np.save(Path(tmp) / "y.npy", rng.integers(0, 10, 50_000))
        wall, rss = run_measured(
            ["-m", "benchmarks.train", "rss-child", tmp], env={"TF_CPP_MIN_LOG_LEVEL": "3"}
        )
    return [
        [
            "peak RSS, 50,000 x 32x32 at 64 px",
            "MiB",
            f"{rss:.0f}",
            "-",
            f"{rss / RSS_LIMIT_MIB:.2f} of limit",
            f"< {RSS_LIMIT_MIB}",
        ],
        ["  (its wall time, 20 steps of 64)", "s", f"{wall:.0f}", "-", "-", ""],
    ]


def source_step_xla(steps: int = 4, batch: int = 32) -> list[list]:
    import keras

    from tasks import training
    from tasks.model import build_head, build_model

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * steps, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 9, len(x))
    steps_of = {}
    for xla in (True, False):
        keras.utils.set_random_seed(0)
        model = build_model(num_classes=9, input_size=32, image_size=32, base_training=None)
        training.compile_model(model, optimizer="adam", learning_rate=3e-4, jit_compile=xla)
        ds = training.array_dataset(x, y, num_classes=9, batch_size=batch)
        steps_of["on" if xla else "off"] = lambda m=model, d=ds: (
            _timed(lambda: m.fit(d, verbose=0)) / steps
        )
    step_s = alternating(steps_of, repeats=REPEATS)
    fx = rng.random((1300, 2048), dtype=np.float32)
    fy = rng.integers(0, 10, len(fx))
    heads = {}
    for xla in (True, False):
        keras.utils.set_random_seed(0)
        head = build_head(num_classes=10, units=(128, 64), dropout=0.2, seed=0)
        training.compile_model(head, optimizer="adam", learning_rate=1e-3, jit_compile=xla)
        ds = training.array_dataset(fx, fy, num_classes=10, batch_size=batch, shuffle=True)
        heads["on" if xla else "off"] = lambda h=head, d=ds: _timed(lambda: h.fit(d, verbose=0))
    head_s = alternating(heads, repeats=REPEATS)
    return [
        [
            "head [128, 64] + dropout on 1,300 cached features",
            "s/epoch",
            median_spread(head_s["on"]),
            median_spread(head_s["off"]),
            median_spread(ratio_samples(head_s["off"], head_s["on"]), "{:.2f}x"),
            "(XLA on vs off: off is used)",
        ],
        [
            f"source train step, batch {batch}, 32 px",
            "s/step",
            median_spread(step_s["on"]),
            median_spread(step_s["off"]),
            median_spread(ratio_samples(step_s["off"], step_s["on"]), "{:.1f}x"),
            "(XLA on vs off)",
        ],
    ]


def main() -> None:
    rows = cached_vs_frozen() + pipeline_vs_in_memory() + peak_rss() + source_step_xla()
    print(table(["measure", "unit", "ours", "baseline", "ratio", "target"], rows))
    print(
        "baseline: the frozen ResNet-50 every epoch (1), model.fit on in-memory numpy (2), "
        f"the same step without XLA (4). Each cell: median (min-max) of {REPEATS} samples "
        "per side, taken alternately after a warm-up that traces the measured function; "
        "a ratio is the median of per-round ratios."
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["rss-child"]:
        rss_child(sys.argv[2])
    else:
        main()
