"""The audit stage on small real inputs with planted faults: near-duplicates across splits,
flipped labels, a shifted dataset. No TensorFlow: the stage reads cached embeddings, so the
fixtures write them as the features stage would (features/<split>.npy + features.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.audit import FEATURES_INFO, audit, check_drift, fingerprint_of, load_features, main
from tasks.auditing import drift, duplicates, labels
from tasks.common import run_main
from tasks.dataset import open_prepared
from tasks.params import section
from tasks.publish import drift_of, drift_verdict
from tests.conftest import ROOT
from tests.helpers import params_yaml, write_prepared

CLASSES = [f"c{i}" for i in range(5)]
SIZES = {"train": 200, "val": 50, "test": 50}
LEAKS = [3, 17, 29]  # test images that are noisy copies of train images 0, 1, 2


def smooth_images(n: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """(n, size, size, 3) uint8: a random 5x5 colour grid, bilinearly blown up: smooth
    gradients like a photo's, which a dHash sees (pixel noise shares no structure)."""
    grid = rng.uniform(0, 255, (n, 5, 5, 3))
    pos = np.linspace(0, 4, size)
    w = np.maximum(0, 1 - np.abs(pos[:, None] - np.arange(5)[None, :]))  # (size, 5) weights
    return np.einsum("ia,nabc,jb->nijc", w, grid, w).round().astype(np.uint8)


def embeddings_for(labels_: np.ndarray, rng: np.random.Generator, dim: int = 32) -> np.ndarray:
    """Well-separated class clusters (centres ~12 apart, noise ~6 long), float32 like the cache;
    within a class cosine similarity is ~0.7, so only planted copies pass 0.97."""
    centres = np.random.default_rng(99).normal(0, 1.5, (len(CLASSES), dim))
    return (centres[labels_] + rng.normal(0, 1, (len(labels_), dim))).astype(np.float32)


def write_features(folder: Path, feats: dict[str, np.ndarray], sha: str = "abc") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, x in feats.items():
        np.save(folder / f"{split}.npy", x)
    info = {"backbone_sha256": sha, "image_size": 32, "n": {s: len(x) for s, x in feats.items()}}
    (folder / FEATURES_INFO).write_text(json.dumps(info))
    return folder


def dataset(tmp: Path, *, seed: int = 0, leaks: bool = True, brighten: int = 0) -> tuple:
    """(prepared dir, features dir): 5 classes; test[LEAKS] are noisy copies of train[:3]."""
    rng = np.random.default_rng(seed)
    splits, feats = {}, {}
    for split, n in SIZES.items():
        y = np.arange(n) % len(CLASSES)
        splits[split] = [smooth_images(n, rng), y]
        feats[split] = embeddings_for(y, rng)
    if leaks:
        test_x, test_y = splits["test"]
        for k, j in enumerate(LEAKS):
            noise = rng.integers(-3, 4, test_x[j].shape)
            test_x[j] = np.clip(splits["train"][0][k].astype(int) + noise, 0, 255)
            test_y[j] = splits["train"][1][k]
            feats["test"][j] = feats["train"][k] + rng.normal(0, 0.01, feats["train"][k].shape)
    if brighten:
        for split in splits:
            splits[split][0] = np.clip(splits[split][0].astype(int) + brighten, 0, 255)
            feats[split] = feats[split] + 1.5  # the backbone sees brighter images differently
    prepared = write_prepared(tmp / "prepared", {s: tuple(v) for s, v in splits.items()}, CLASSES)
    return prepared, write_features(tmp / "features", feats)


def test_dhash_matches_a_noisy_copy_and_not_other_images():
    rng = np.random.default_rng(1)
    images = smooth_images(100, rng)
    noisy = np.clip(images.astype(int) + rng.integers(-3, 4, images.shape), 0, 255)
    dimmer = (images * 0.8).round()  # contrast change: gradients keep their sign
    h = duplicates.dhash(images)
    limit = section("audit").hash_max_distance
    noisy_bits = np.bitwise_count(h ^ duplicates.dhash(noisy.astype(np.uint8)))
    assert np.mean(noisy_bits <= limit) >= 0.95 and noisy_bits.max() <= 4
    dimmer_bits = np.bitwise_count(h ^ duplicates.dhash(dimmer.astype(np.uint8)))
    assert np.mean(dimmer_bits <= limit) >= 0.95
    idx, dist = duplicates.nearest_hash(h[50:], h[:50])  # distinct images are far apart
    assert dist.min() > 8


def test_near_duplicates_across_splits_are_found_by_both_searches(tmp_path: Path):
    prepared, features = dataset(tmp_path)
    result = audit(prepared=open_prepared(prepared), features_dir=features, cfg=section("audit"))
    pairs = result.pairs
    assert sorted(pairs.idx_b[pairs.split_b == "test"]) == LEAKS
    leaked = pairs[pairs.split_b == "test"].sort_values("idx_b")
    assert leaked.idx_a.tolist() == [0, 1, 2]
    assert set(leaked.method) == {"both"}
    assert (leaked.similarity > 0.99).all()
    near = result.summary["near_duplicates"]
    assert near["observed"]["test"] == {"images": 3, "share": 0.06}
    assert near["observed"]["val"]["images"] == 0
    assert result.summary["warnings"] == [near["name"]] and result.summary["passed"]


def test_a_clean_dataset_passes_with_no_pairs(tmp_path: Path):
    prepared, features = dataset(tmp_path, leaks=False)
    result = audit(prepared=open_prepared(prepared), features_dir=features, cfg=section("audit"))
    assert result.pairs.empty
    assert result.summary["passed"] and not result.summary["warnings"]


def test_label_finder_recovers_planted_flips():
    """5% of labels flipped on well-separated clusters: most flips found, few false alarms."""
    rng = np.random.default_rng(7)
    y_true = np.arange(1000) % len(CLASSES)
    x = embeddings_for(y_true, rng)
    flipped = rng.choice(len(y_true), 50, replace=False)
    y = y_true.copy()
    y[flipped] = (y[flipped] + rng.integers(1, len(CLASSES), 50)) % len(CLASSES)
    probs = labels.out_of_fold_probs(x, y, folds=5, seed=0)
    found = set(labels.find_issues(probs, y).tolist())
    precision = len(found & set(flipped.tolist())) / max(len(found), 1)
    recall = len(found & set(flipped.tolist())) / len(flipped)
    print(f"label issues: precision {precision:.2f} recall {recall:.2f} ({len(found)} found)")
    assert recall >= 0.6 and precision >= 0.5


def test_label_suspects_name_given_and_suggested_class(tmp_path: Path):
    prepared, features = dataset(tmp_path, leaks=False)
    root = Path(prepared)
    y = np.load(root / "train" / "labels.npy")
    true = y.copy()
    planted = np.arange(3, 200, 21)  # 10 wrong labels (5%) over every class
    y[planted] = (y[planted] + 2) % len(CLASSES)
    np.save(root / "train" / "labels.npy", y)
    cfg = section("audit", label_top_per_class=50)
    result = audit(prepared=open_prepared(prepared), features_dir=features, cfg=cfg)
    s = result.suspects.set_index(["split", "idx"])
    found = [i for i in planted if ("train", i) in s.index]
    assert len(found) >= 7, s
    for i in found:
        row = s.loc[("train", i)]
        assert (row.given, row.suggested) == (CLASSES[y[i]], CLASSES[true[i]])
        assert row.self_confidence < 0.2 < row.suggested_prob
    assert result.summary["label_issues"]["found"] <= 2 * len(planted)


def test_drift_same_data_is_not_drifted_shifted_data_is(tmp_path: Path):
    ref_prepared, ref_features = dataset(tmp_path / "ref")
    same = section(
        "audit", reference_features=str(ref_features), reference_prepared=str(ref_prepared)
    )
    info, feats = load_features(ref_features)
    verdict = check_drift(
        new=fingerprint_of(open_prepared(ref_prepared), info, feats, same), cfg=same
    )
    assert verdict["drifted"] is False
    assert verdict["embeddings"]["p_value"] > 0.5 and verdict["embeddings"]["domain_auc"] < 0.65

    new_prepared, new_features = dataset(tmp_path / "new", seed=1, brighten=40)
    info, feats = load_features(new_features)
    verdict = check_drift(
        new=fingerprint_of(open_prepared(new_prepared), info, feats, same), cfg=same
    )
    assert verdict["drifted"] is True and verdict["embeddings"]["drifted"]
    assert verdict["pixels_drifted"] and min(verdict["pixels"]["mean_shift"]) > 20
    assert verdict["embeddings"]["domain_auc"] > 0.9


def test_drift_of_one_class_names_that_class(tmp_path: Path):
    ref_prepared, ref_features = dataset(tmp_path / "ref")
    new_prepared, new_features = dataset(tmp_path / "new", seed=1)
    for split in ("train", "val", "test"):  # class c3's embeddings move, nothing else
        x = np.load(new_features / f"{split}.npy")
        y = np.load(new_prepared / split / "labels.npy")
        x[y == 3] += 3.0
        np.save(new_features / f"{split}.npy", x)
    cfg = section(
        "audit", reference_features=str(ref_features), reference_prepared=str(ref_prepared)
    )
    info, feats = load_features(new_features)
    verdict = check_drift(
        new=fingerprint_of(open_prepared(new_prepared), info, feats, cfg), cfg=cfg
    )
    assert verdict["drifted"] and not verdict["pixels_drifted"]
    assert next(iter(verdict["embeddings"]["most_shifted_classes"])) == "c3"
    # what publish records in the manifest and the DAG's publish result (the stage's summary)
    drift = drift_of({"drift": verdict})
    assert drift["drifted"] and drift["reference"]["features"] == str(ref_features)
    assert drift_verdict(drift)["drifted_classes"][0] == "c3"


def run_stage(tmp_path: Path, capsys, *, drop_info: bool = False, **audit_params):
    """(exit code, stderr) of the stage's `main()` under run_main, as `python -m tasks.audit`
    runs it (in-process: a fresh interpreter spends most of a test importing sklearn)."""
    prepared, features = dataset(tmp_path)
    if drop_info:
        (features / FEATURES_INFO).unlink()
    params = tmp_path / "params.yaml"
    doc = {
        "data": {"prepared_dir": str(prepared)},
        "train": {"features_dir": str(features)},
        "audit": {"out_dir": str(tmp_path / "audit"), **audit_params},
    }
    params.write_text(params_yaml(doc))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sys, "argv", ["tasks.audit", "--params", str(params)])
        try:
            run_main(main)
            code = 0
        except SystemExit as e:
            code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("severity, code", [("warning", 0), ("error", 2)])
def test_stage_warns_or_stops_on_near_duplicates(tmp_path: Path, capsys, severity, code):
    exit_code, err = run_stage(tmp_path, capsys, near_duplicate_severity=severity)
    assert exit_code == code, err
    out = tmp_path / "audit"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["near_duplicates"]["observed"]["test"]["images"] == 3
    assert summary["passed"] is (severity == "warning")
    assert summary["drifted"] is None  # no reference given
    assert len(pd.read_csv(out / "near_duplicates.csv")) == 3
    assert (out / "near_duplicates.png").stat().st_size > 5000
    assert (out / "label_issues.png").is_file()
    # the fingerprint the next run's publish compares with: a subsample of every split
    fp = drift.load_fingerprint(out / "fingerprint.npz", what="fingerprint")
    # the same data gives the same bytes (publish depends on it: no change, no new publish)
    drift.save_fingerprint(fp, tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == (out / "fingerprint.npz").read_bytes()
    assert "seconds" not in summary
    n = sum(len(np.load(tmp_path / "features" / f"{s}.npy")) for s in ("train", "val", "test"))
    assert fp.embeddings.shape == (min(n, 1000), 32) and len(fp.classes) == len(fp.embeddings)
    assert set(fp.classes) == set(CLASSES) and len(fp.pixel_mean) == 3
    assert "near_duplicates_across_splits" in err  # the warning, or the error naming it
    assert "Traceback" not in err


def test_missing_features_is_one_clear_error(tmp_path: Path):
    """As a user runs it: a child process, one line, exit 2."""
    prepared, features = dataset(tmp_path)
    (features / FEATURES_INFO).unlink()
    params = tmp_path / "params.yaml"
    doc = {"data": {"prepared_dir": str(prepared)}, "train": {"features_dir": str(features)}}
    params.write_text(params_yaml(doc))
    cmd = [sys.executable, "-m", "tasks.audit", "--params", str(params)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "dvc repro features" in proc.stderr and "Traceback" not in proc.stderr
