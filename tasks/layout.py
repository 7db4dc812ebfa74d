"""Artifact file names, defined once: what one stage writes and a later one reads.

Folders come from params.yaml (`train.models_dir`, `evaluate.out_dir`, ...); the names of
the files inside them live here, so a stage and its reader can never disagree.
"""

from __future__ import annotations

# a trained model's folder (models/<name>/): train writes, evaluate/visualize/publish read
MODEL = "model.keras"  # uint8 images in, class probabilities out (tasks.model)
HISTORY = "history.json"  # {"phases": [{"name", "epochs": [{epoch, loss, ...}]}]}
TRAIN_INFO = "train.json"  # what was trained: strategy, unfrozen layers, params, timing
LIVE = "dvclive"  # DVCLive's per-epoch log (metrics.json, plots/metrics/*.tsv), also the backbone's
SWEEP = "sweep"  # in train.models_dir: one folder per sweep point, named by sweep_point()


def sweep_point(unfreeze: int | str, augment: bool) -> str:
    """A sweep point's folder name, as DVC names its matrix item: unfreeze-3-aug-false."""
    return f"unfreeze-{unfreeze}-aug-{str(augment).lower()}"


# the backbone's folder (backbone.out_dir)
BACKBONE_WEIGHTS = "backbone.weights.h5"  # the base's weights: every transfer stage starts here
BACKBONE_INFO = "backbone.json"
SOURCE_MODEL = MODEL  # the source classifier (source case only)

# evaluate.out_dir
METRICS = "metrics.json"  # DVC metrics: one entry per model
COMPARISON = "comparison.csv"  # one row per model (DVC plot)
CONFUSION, CURVES, DETAILS = "confusion", "curves", "details"  # folders
SCORED = "scored.json"  # in details/<model>/: which model file and labels probs.npy is of
PROBS = "probs.npy"  # in details/<model>/: (N, C) float32 test-split probabilities
RELIABILITY = "reliability.json"  # in details/<model>/: confidence bins, raw and calibrated

# visualize.out_dir
FIGURES = "figures.json"  # the figure manifest the report reads
REPORT_RUN = "run.json"  # {"run_id": ...}: the id the report shows; publish names the run so

# study.out_dir (the study stage): the unfreezing sweep scored; the report shows it if present
STUDY = "study.json"  # {"split", "tolerance", "headline", "rule", "points", "recommended"}
STUDY_CSV, STUDY_PNG, STUDY_PAGE = "study.csv", "study.png", "study.html"

# publish.destination
MANIFEST = "manifest.json"  # runs/<run_id>/manifest.json, written after every file
CHAMPION = "champion.json"  # the best run so far, replaced last

# export.out_dir/<model>/ (the export stage): one folder per exported model
SAVED_MODEL = "saved_model"  # folder; signature `serving_default`: image uint8 -> output_0
ONNX_MODEL = "model.onnx"
TFLITE_MODEL = "model.tflite"  # LiteRT
EXPORT_INFO = "export.json"  # per format: bytes, sha256, parity, latency and throughput

AUDIT_SUMMARY = "summary.json"  # in audit.out_dir: the verdicts (DVC metrics); publish reads drift
AUDIT_FINGERPRINT = "fingerprint.npz"  # in audit.out_dir: what drift is measured on
