"""Stage `audit`: features/ + data/prepared/ -> reports/audit/ (one embedding cache, many uses).

    python -m tasks.audit [--params params.yaml] [--set audit.near_duplicate_severity=error]

Three checks on the features stage's cached ResNet-50 embeddings (tasks/auditing/):

- near-duplicates across splits (train -> val, train -> test, val -> test): cosine
  similarity >= audit.near_duplicate_similarity, or a dHash within audit.hash_max_distance
  bits (pixels only: the backbone-free check; listed, but the gate counts embedding matches).
  Exact copies are validate's job. Gated like a GX expectation: the val/test share with a
  near-duplicate <= audit.max_near_duplicate_share, severity audit.near_duplicate_severity
  (warning: reported; error: exit 2 naming it). On the digits with a random-weights
  backbone, centred cosine similarity of a val/test image to its nearest train image has
  median 0.82, 99th percentile 0.93-0.95, max 0.97: 0.97 flags only near-copies.
- label-issue candidates on train + val: out-of-fold logistic-regression probabilities,
  cleanlab's find_label_issues, the top suspects per class with given and suggested label.
- drift against a reference, when audit.reference_features/reference_prepared name it:
  MMD permutation test + domain-classifier AUC on embeddings, per-channel pixel
  statistics, the most shifted classes; summary.json's `drifted` is the verdict. Every run
  also writes its data fingerprint (a seeded embedding subsample + pixel statistics), which
  publish uploads: without a reference given here, publish compares this run's fingerprint
  with the champion's (tasks/auditing/drift.py).

    reports/audit/
      summary.json          DVC metrics: passed, warnings, failed, near_duplicates,
                            label_issues, drift, drifted (null = no reference given)
      near_duplicates.csv   split_a, idx_a, split_b, idx_b, method, similarity, hamming
      label_issues.csv      split, idx, given, suggested, self_confidence, suggested_prob
      near_duplicates.png   the most similar pairs side by side
      label_issues.png      the suspects with both labels
      fingerprint.npz       drift fingerprint: embeddings (n, D), classes, backbone_sha256,
                            pixel_mean, pixel_std (plain arrays, no pickle)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.auditing import drift, duplicates, labels
from tasks.common import UserError, atomic_dir, atomic_write_json, run_main
from tasks.dataset import SPLITS, Prepared, open_prepared
from tasks.layout import AUDIT_FINGERPRINT, AUDIT_SUMMARY
from tasks.params import AuditParams, params_from_cli

FEATURES_INFO = "features.json"  # tasks.features.INFO_FILE (not imported: it pulls in Keras)
SUMMARY, PAIRS, ISSUES = AUDIT_SUMMARY, "near_duplicates.csv", "label_issues.csv"
FINGERPRINT = AUDIT_FINGERPRINT
PAIRS_PNG, ISSUES_PNG = "near_duplicates.png", "label_issues.png"
NEAR_DUPLICATES = "near_duplicates_across_splits"  # the gated check's name


@dataclass
class Audit:
    summary: dict
    pairs: pd.DataFrame
    suspects: pd.DataFrame
    fingerprint: drift.Fingerprint  # what the next run's drift check compares with
    seconds: dict  # per check; printed, not in summary.json (its bytes must repeat: publish
    #                depends on it, and an unchanged run must not publish again)


def load_features(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(features.json, split -> (N, D) memmap) as the features stage wrote them."""
    meta = Path(folder) / FEATURES_INFO
    if not meta.is_file():
        raise UserError(
            f"{folder}: no cached features; run the features stage (`dvc repro features`) first"
        )
    info = json.loads(meta.read_text())
    return info, {s: np.load(Path(folder) / f"{s}.npy", mmap_mode="r") for s in info["n"]}


def check_near_duplicates(
    *, prepared: Prepared, feats: dict[str, np.ndarray], cfg: AuditParams
) -> tuple[pd.DataFrame, dict]:
    """The cross-split pairs and the gate's outcome (GX-style: observed, threshold, severity)."""
    splits = [s for s in SPLITS if s in feats]
    for s in splits:
        if len(feats[s]) != len(prepared.labels(s)):
            raise UserError(f"features/{s}.npy does not match data/prepared/{s}/; re-run features")
    hashes = {s: duplicates.dhash(prepared.images(s)) for s in splits}
    pairs = duplicates.cross_split_pairs(
        embeddings=feats,
        hashes=hashes,
        min_similarity=cfg.near_duplicate_similarity,
        max_hamming=cfg.hash_max_distance,
    )
    # the gate counts embedding matches; a hash-only match is listed (it is the check for
    # the backbone-free case) but low-detail images (digits at 8 px) share dHashes freely
    gated = pairs[pairs.method != "hash"] if feats else pairs
    shares = duplicates.leak_shares(gated, {s: len(feats[s]) for s in splits})
    worst = max((v["share"] for v in shares.values()), default=0.0)
    outcome = {
        "name": NEAR_DUPLICATES,
        "success": worst <= cfg.max_near_duplicate_share,
        "severity": cfg.near_duplicate_severity,
        "observed": shares,
        "pairs": pairs.groupby(["split_a", "split_b"]).size().rename(None).to_dict(),
        "by_method": pairs.method.value_counts().to_dict(),
        "max_share": cfg.max_near_duplicate_share,
        "min_similarity": cfg.near_duplicate_similarity,
        "hash_max_distance": cfg.hash_max_distance,
    }
    outcome["pairs"] = {f"{a}-{b}": int(n) for (a, b), n in outcome["pairs"].items()}
    return pairs, outcome


def check_labels(
    *, prepared: Prepared, feats: dict[str, np.ndarray], cfg: AuditParams
) -> tuple[pd.DataFrame, dict]:
    """Label-issue candidates among train + val (test stays untouched: it scores models)."""
    splits = [s for s in ("train", "val") if s in feats]
    x = np.concatenate([feats[s] for s in splits])
    y = np.concatenate([prepared.labels(s) for s in splits])
    split = np.concatenate([np.full(len(feats[s]), s) for s in splits])
    idx = np.concatenate([np.arange(len(feats[s])) for s in splits])
    probs = labels.out_of_fold_probs(x, y, folds=cfg.label_folds, seed=cfg.seed)
    issues = labels.find_issues(probs, y)
    classes = prepared.classes
    suspects = labels.suspects_table(
        issues=issues,
        probs=probs,
        y=y,
        split=split,
        idx=idx,
        classes=classes,
        top_per_class=cfg.label_top_per_class,
    )
    per_class = pd.Series([classes[c] for c in y[issues]]).value_counts().to_dict()
    return suspects, {
        "checked": len(y),
        "found": len(issues),
        "share": round(len(issues) / max(len(y), 1), 4),
        "oof_accuracy": round(float((probs.argmax(axis=1) == y).mean()), 4),
        "per_class": {c: int(per_class.get(c, 0)) for c in classes},
    }


def fingerprint_of(
    prepared: Prepared, info: dict, feats: dict, cfg: AuditParams
) -> drift.Fingerprint:
    """This dataset's drift fingerprint: audit.drift_samples embeddings of every split (seeded
    subsample), their class names, the backbone's sha256 and the pixel statistics."""
    splits = [s for s in SPLITS if s in feats]
    x = np.concatenate([feats[s] for s in splits])
    names = np.asarray(prepared.classes)[np.concatenate([prepared.labels(s) for s in splits])]
    rows = drift.pick(len(x), cfg.drift_samples, np.random.default_rng(cfg.seed))
    pixels = _pixels(prepared)
    return drift.Fingerprint(
        embeddings=np.asarray(x[rows], np.float32),
        classes=names[rows],
        backbone_sha256=str(info.get("backbone_sha256")),
        pixel_mean=pixels["mean"],
        pixel_std=pixels["std"],
    )


def check_drift(*, new: drift.Fingerprint, cfg: AuditParams) -> dict | None:
    """Drift of this data against audit.reference_features/_prepared; None when not given.
    (Without them, publish compares with the champion's published fingerprint.)"""
    if cfg.reference_features is None:
        return None
    ref_info, ref_feats = load_features(Path(cfg.reference_features))
    reference = fingerprint_of(open_prepared(cfg.reference_prepared), ref_info, ref_feats, cfg)
    return {
        "reference": {"features": cfg.reference_features, "prepared": cfg.reference_prepared},
        **drift.compare_with(reference, new, cfg),
    }


def _pixels(prepared: Prepared) -> dict:
    """Per-channel mean/std over every split's images, weighted by split size."""
    stats, sizes = [], []
    for s in SPLITS:
        if (prepared.root / s / "images.npy").is_file():
            images = prepared.images(s)
            stats.append(drift.channel_stats(images))
            sizes.append(len(images))
    w = np.asarray(sizes, float) / max(sum(sizes), 1)
    mean = sum(wi * np.asarray(st["mean"]) for wi, st in zip(w, stats, strict=True))
    var = sum(
        wi * (np.asarray(st["std"]) ** 2 + np.asarray(st["mean"]) ** 2)
        for wi, st in zip(w, stats, strict=True)
    )
    return {"mean": np.round(mean, 3).tolist(), "std": np.round(np.sqrt(var - mean**2), 3).tolist()}


def audit(*, prepared: Prepared, features_dir: Path, cfg: AuditParams) -> Audit:
    """Run the three checks; the verdict (passed, warnings, failed) first in the summary."""
    info, feats = load_features(features_dir)
    seconds = {}
    start = time.perf_counter()
    pairs, near = check_near_duplicates(prepared=prepared, feats=feats, cfg=cfg)
    seconds["near_duplicates"] = time.perf_counter() - start
    suspects, issues = check_labels(prepared=prepared, feats=feats, cfg=cfg)
    seconds["label_issues"] = time.perf_counter() - start - sum(seconds.values())
    fingerprint = fingerprint_of(prepared, info, feats, cfg)
    shifted = check_drift(new=fingerprint, cfg=cfg)
    seconds["drift"] = time.perf_counter() - start - sum(seconds.values())
    failing = [] if near["success"] else [NEAR_DUPLICATES]
    summary = {
        "passed": near["success"] or near["severity"] == "warning",
        "failed": failing if near["severity"] == "error" else [],
        "warnings": failing if near["severity"] == "warning" else [],
        "drifted": None if shifted is None else shifted["drifted"],
        "near_duplicates": near,
        "label_issues": issues,
        "drift": shifted,
    }
    seconds = {k: round(v, 2) for k, v in seconds.items()}
    return Audit(summary, pairs, suspects, fingerprint, seconds)


def write(result: Audit, *, prepared: Prepared, out: Path, pairs_shown: int) -> None:
    """reports/audit/ in one atomic swap: summary, both CSVs, both PNGs."""
    from tasks.auditing.figures import pairs_figure, suspects_figure
    from tasks.figures import save

    index = prepared.index().set_index(["split", "idx"])["class_name"]

    def image(split: str, i: int) -> np.ndarray:
        return np.asarray(prepared.images(split)[int(i)])

    def class_of(split: str, i: int) -> str:
        return str(index.loc[(split, int(i))])

    with atomic_dir(out) as tmp:
        atomic_write_json(tmp / SUMMARY, result.summary)
        result.pairs.to_csv(tmp / PAIRS, index=False)
        result.suspects.to_csv(tmp / ISSUES, index=False)
        drift.save_fingerprint(result.fingerprint, tmp / FINGERPRINT)
        save(
            pairs_figure(result.pairs, image, classes_of=class_of, shown=pairs_shown),
            tmp / PAIRS_PNG,
        )
        save(suspects_figure(result.suspects, image), tmp / ISSUES_PNG)


def main() -> None:
    params = params_from_cli(__doc__)
    cfg = params.audit
    prepared = open_prepared(params.data.prepared_dir)
    result = audit(prepared=prepared, features_dir=Path(params.train.features_dir), cfg=cfg)
    out = Path(cfg.out_dir)
    write(result, prepared=prepared, out=out, pairs_shown=cfg.pairs_shown)
    s = result.summary
    near, issues = s["near_duplicates"], s["label_issues"]
    print(f"audit  {out}/")
    print(f"  near-duplicates across splits: {near['pairs'] or 'none'}  shares {near['observed']}")
    print(f"  label-issue candidates: {issues['found']} of {issues['checked']}")
    print(f"  drifted: {'no reference given' if s['drifted'] is None else s['drifted']}")
    print(f"  seconds: {result.seconds}")
    for name in s["warnings"]:  # stderr, like run_main's "error:" line
        print(
            f"warning: {name}: {near['observed']} of val/test images have a near-duplicate in "
            f"an earlier split (allowed {cfg.max_near_duplicate_share}); see {out / PAIRS}",
            file=sys.stderr,
        )
    if s["failed"]:
        raise UserError(
            f"{NEAR_DUPLICATES}: {near['observed']} of val/test images have a near-duplicate "
            f"in an earlier split (allowed {cfg.max_near_duplicate_share}); see "
            f"{out / PAIRS}, or set audit.near_duplicate_severity: warning"
        )


if __name__ == "__main__":
    run_main(main)
