"""Drift of the new data against a reference (the champion's data): embeddings and pixels.

Embeddings: maximum mean discrepancy (MMD, RBF kernel, median-distance bandwidth) with a
permutation test: under "same distribution" the split into reference/new is arbitrary, so
the share of random re-splits whose MMD is at least the observed one is the p-value. A
domain classifier's cross-validated ROC AUC says how separable the two sets are (0.5: not
at all), and per-class MMD names the classes that moved most. Pixels: mean and std per
channel, in 0..255 levels, which catches a camera or preprocessing change by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.common import UserError, atomic_path


def pick(total: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """At most n sorted row positions of `total` (sorted, so a memmap is read forward)."""
    if total <= n:
        return np.arange(total)
    return np.sort(rng.choice(total, n, replace=False))


def rbf_kernel(z: np.ndarray, gamma: float | None = None) -> tuple[np.ndarray, float]:
    """(N, D) -> (N, N) exp(-gamma |zi - zj|^2); gamma = 1 / median squared distance."""
    sq = (z * z).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    if gamma is None:
        off = d2[np.triu_indices(len(z), k=1)]
        gamma = 1.0 / max(float(np.median(off)), 1e-12)
    return np.exp(-gamma * d2), gamma


def mmd_test(ref: np.ndarray, new: np.ndarray, *, permutations: int, seed: int) -> dict[str, float]:
    """MMD^2 (biased estimate) of ref vs new and its permutation p-value."""
    rng = np.random.default_rng(seed)
    k, gamma = rbf_kernel(np.vstack([ref, new]))
    n, m = len(ref), len(new)
    sign = np.r_[np.full(n, 1 / n), np.full(m, -1 / m)]  # MMD^2_b = s^T K s
    observed = float(sign @ k @ sign)
    perms = np.stack([rng.permutation(sign) for _ in range(permutations)], axis=1)  # (N, P)
    null = np.einsum("ip,ip->p", perms, k @ perms)
    p_value = (1 + int((null >= observed - 1e-12).sum())) / (1 + permutations)
    return {"mmd2": round(observed, 6), "p_value": round(p_value, 4), "gamma": gamma}


def domain_auc(ref: np.ndarray, new: np.ndarray, *, folds: int, seed: int) -> float:
    """Cross-validated ROC AUC of a classifier telling new (1) from reference (0) rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.vstack([ref, new])
    y = np.r_[np.zeros(len(ref)), np.ones(len(new))]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    score = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    return round(float(roc_auc_score(y, score)), 4)


def class_shifts(
    ref: np.ndarray, ref_y: np.ndarray, new: np.ndarray, new_y: np.ndarray, *, gamma: float
) -> dict[str, float]:
    """Class name -> MMD^2 between its reference and new embeddings, largest first."""
    out = {}
    for c in np.intersect1d(ref_y, new_y):
        a, b = ref[ref_y == c], new[new_y == c]
        k, _ = rbf_kernel(np.vstack([a, b]), gamma)
        sign = np.r_[np.full(len(a), 1 / len(a)), np.full(len(b), -1 / len(b))]
        out[str(c)] = round(float(sign @ k @ sign), 6)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def channel_stats(images: np.ndarray, chunk: int = 4096) -> dict[str, list[float]]:
    """(N, H, W, 3) uint8 (memmap ok) -> per-channel mean and std in 0..255 levels."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float64)
        total += block.sum(axis=(0, 1, 2))
        total_sq += (block**2).sum(axis=(0, 1, 2))
        count += block.shape[0] * block.shape[1] * block.shape[2]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 0))
    return {"mean": np.round(mean, 3).tolist(), "std": np.round(std, 3).tolist()}


# --- a run's data in one small file, so the next run can compare with it ----------------


@dataclass(frozen=True)
class Fingerprint:
    """What drift is measured on, for one dataset: a seeded subsample of its embeddings
    (every split), their class names, the backbone that computed them and the pixel
    statistics of all its images. Saved with the run (audit's fingerprint.npz, ~1000 x 2048
    float32 = 8 MB), so a later run compares with the champion's data without its features."""

    embeddings: np.ndarray  # (n, D) float32
    classes: np.ndarray  # (n,) class names
    backbone_sha256: str
    pixel_mean: list[float]
    pixel_std: list[float]


def save_fingerprint(fp: Fingerprint, path: Path) -> None:
    """An .npz of plain arrays (no pickle: loading it runs no code), byte for byte the same
    for the same data (np.savez stamps the time into the zip; publish depends on the file)."""
    import io
    import zipfile

    arrays = {
        "embeddings": np.asarray(fp.embeddings, np.float32),
        "classes": np.asarray(fp.classes, dtype=str),
        "backbone_sha256": np.asarray(fp.backbone_sha256, dtype=str),
        "pixel_mean": np.asarray(fp.pixel_mean, np.float64),
        "pixel_std": np.asarray(fp.pixel_std, np.float64),
    }
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as z:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.save(buf, a, allow_pickle=False)
            z.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue()
            )


def load_fingerprint(path: Path, *, what: str) -> Fingerprint:
    """The file save_fingerprint wrote; one clear error naming `what` if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return Fingerprint(
                embeddings=z["embeddings"],
                classes=z["classes"],
                backbone_sha256=str(z["backbone_sha256"]),
                pixel_mean=z["pixel_mean"].tolist(),
                pixel_std=z["pixel_std"].tolist(),
            )
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{what}: not a data fingerprint ({type(e).__name__}: {e})") from None


def compare(
    ref: Fingerprint,
    new: Fingerprint,
    *,
    alpha: float,
    permutations: int,
    max_channel_shift: float,
    seed: int,
) -> dict:
    """The drift verdict of `new` against `ref`: pixel mean shift per channel, and on the
    embeddings (same backbone only) the MMD permutation test, the domain AUC and the most
    shifted classes. `drifted` when either says so."""
    shift = np.round(np.subtract(new.pixel_mean, ref.pixel_mean), 3).tolist()
    out: dict = {
        "pixels": {
            "reference": {"mean": ref.pixel_mean, "std": ref.pixel_std},
            "new": {"mean": new.pixel_mean, "std": new.pixel_std},
            "mean_shift": shift,
        },
        "pixels_drifted": bool(max(map(abs, shift)) > max_channel_shift),
    }
    if ref.backbone_sha256 != new.backbone_sha256:
        out["embeddings"] = None
        out["embeddings_note"] = "reference features come from other backbone weights"
    else:
        a, b = np.asarray(ref.embeddings, np.float64), np.asarray(new.embeddings, np.float64)
        test = mmd_test(a, b, permutations=permutations, seed=seed)
        shifts = class_shifts(a, ref.classes, b, new.classes, gamma=test.pop("gamma"))
        out["embeddings"] = {
            **test,
            "drifted": test["p_value"] < alpha,
            "alpha": alpha,
            "domain_auc": domain_auc(a, b, folds=3, seed=seed),
            "samples": [len(a), len(b)],
            "most_shifted_classes": dict(list(shifts.items())[:3]),
        }
    out["drifted"] = out["pixels_drifted"] or bool(
        out["embeddings"] and out["embeddings"]["drifted"]
    )
    return out


def compare_with(ref: Fingerprint, new: Fingerprint, cfg) -> dict:
    """compare() with the audit params' settings (`cfg`: tasks.params.AuditParams)."""
    return compare(
        ref,
        new,
        alpha=cfg.drift_alpha,
        permutations=cfg.drift_permutations,
        max_channel_shift=cfg.max_channel_shift,
        seed=cfg.seed,
    )
