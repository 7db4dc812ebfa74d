"""The audit's searches at CIFAR-10 size: 60,000 embeddings of dim 2048 (45k/5k/10k splits).

Each part runs in a child process (`python -m benchmarks.audit PART N`) so its peak RSS is
its own: the exact cross-split near-duplicate search on embeddings (scikit-learn brute
force on L2-normalised float32), the dHash search on 60,000 32x32 images, and the
label-issue pass (5-fold logistic regression on 50,000 train+val embeddings + cleanlab).
Embeddings are synthetic: 10 Gaussian clusters, 1% of test planted as noisy copies of train,
so the search has real matches to find. Target: each part < 10 min, < 4 GiB.

Measured on the shared 2-core machine under a load of ~10 (work s = the search alone):
embeddings 280 s (1.6 GiB peak), dHash 16 s, label issues 195 s (2.3 GiB), each finding
the 100 planted copies and no label issues on the clean clusters. The search cost does not
depend on the thresholds (every query's nearest neighbour is computed).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._util import run_measured, table

SPLITS = {"train": 45_000, "val": 5_000, "test": 10_000}
DIM, CLASSES, LIMIT_S, LIMIT_MIB = 2048, 10, 600, 4096


def synthetic(scale: float, seed: int = 0) -> tuple[dict, dict, dict]:
    """(embeddings, labels, images) per split; test[:1%] copy train[:1%] with noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (CLASSES, DIM)).astype(np.float32)
    feats, labels, images = {}, {}, {}
    for split, n in SPLITS.items():
        n = int(n * scale)
        y = np.arange(n) % CLASSES
        feats[split] = centres[y] + rng.normal(0, 1, (n, DIM)).astype(np.float32)
        labels[split] = y
        images[split] = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    k = len(feats["test"]) // 100
    feats["test"][:k] = feats["train"][:k] + rng.normal(0, 0.05, (k, DIM)).astype(np.float32)
    images["test"][:k] = images["train"][:k]
    return feats, labels, images


def part(name: str, scale: float) -> str:
    """One measured part, in this (child) process: "<name> <seconds> <found>"."""
    import cleanlab.filter  # noqa: F401  (imports are the fixed cost, not the search's)
    import sklearn.linear_model  # noqa: F401
    import sklearn.neighbors  # noqa: F401

    from tasks.auditing import duplicates, labels

    feats, y, images = synthetic(scale)
    start = time.perf_counter()
    if name == "embeddings":
        pairs = duplicates.cross_split_pairs(
            embeddings=feats, hashes=None, min_similarity=0.97, max_hamming=0
        )
        found = len(pairs)
    elif name == "hashes":
        hashes = {s: duplicates.dhash(x) for s, x in images.items()}
        pairs = duplicates.cross_split_pairs(
            embeddings=None, hashes=hashes, min_similarity=1.0, max_hamming=2
        )
        found = len(pairs)
    else:
        x = np.concatenate([feats["train"], feats["val"]])
        yy = np.concatenate([y["train"], y["val"]])
        found = len(labels.find_issues(labels.out_of_fold_probs(x, yy, folds=5, seed=0), yy))
    return f"{name} {time.perf_counter() - start:.1f} {found}"


def main(scale: float = 1.0) -> None:
    import tempfile

    rows = []
    for name, what in (
        ("embeddings", "near-duplicates, embeddings (cos >= 0.97)"),
        ("hashes", "near-duplicates, dHash (<= 2 bits)"),
        ("labels", "label issues (5-fold LR + cleanlab)"),
    ):
        log = Path(tempfile.mkstemp(suffix=".log")[1])
        wall, rss = run_measured(
            ["-m", "benchmarks.audit", name, str(scale), str(log)], env={"PYTHONWARNINGS": "ignore"}
        )
        _, seconds, found = log.read_text().split()
        log.unlink()
        ok = float(seconds) < LIMIT_S and rss < LIMIT_MIB
        n = sum(int(v * scale) for v in SPLITS.values())
        rows.append(
            [what, f"{n:,}", seconds, f"{wall:.1f}", f"{rss:.0f}", found, "yes" if ok else "NO"]
        )
    print(
        table(["part", "embeddings", "work s", "wall s", "peak RSS MiB", "found", "within"], rows)
    )


if __name__ == "__main__":
    if len(sys.argv) == 4:  # a child: PART SCALE LOG
        Path(sys.argv[3]).write_text(part(sys.argv[1], float(sys.argv[2])))
    else:
        main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
