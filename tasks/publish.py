"""Stage `publish`: a run's artifacts -> object storage (or a local folder), champion gate.

    python -m tasks.publish [--set publish.destination=s3://bucket/prefix] [--set ...]

Layout at `publish.destination` (tasks/storage.py: local folder, file:// or s3://):

    runs/<run_id>/<artifact paths...>   model, metrics, figures, report, validation docs
    runs/<run_id>/exports/<model>/      publish.model's serving exports (export stage), when
                                        export.out_dir is in publish.artifacts
    runs/<run_id>/manifest.json         written last: run id, git commit, dataset version,
                                        params, metrics, the gate's decision, the sha256 +
                                        size of every file above, the model's exports and
                                        its calibration `temperature` (train.json's)
    champion.json                       the best run so far; replaced last, atomically; its
                                        `exports` {format: {path, sha256, ...}} are what
                                        `tasks.predict --model champion --format onnx` loads;
                                        `temperature` calibrates its .keras model

A reader trusts a run only once its manifest exists. The gate scores `publish.model` on the
prepared test split; it replaces the champion only if it beats the champion's score on the
same dataset version by more than `publish.min_improvement` and no class's recall drops by
more than `publish.max_class_drop` against the champion's (the decision names the class; a
champion scored on another dataset version is re-scored on this one first). Otherwise the run
stays a challenger.
Publishing the same run again uploads nothing and changes nothing.

`publish` plans first (hash, score, gate: nothing written), then applies the plan: files,
manifest (created only if absent), and last champion.json, written only over the champion
the gate read (If-Match / If-None-Match). A publisher that loses that race to another is
gated again against the new champion; its manifest keeps the decision it was published with.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.calibration import temperature_of
from tasks.common import UserError, atomic_write_json, file_digest, lines_digest, run_main
from tasks.dataset import Prepared, open_prepared
from tasks.layout import (
    AUDIT_FINGERPRINT,
    AUDIT_SUMMARY,
    CHAMPION,
    DETAILS,
    EXPORT_INFO,
    MANIFEST,
    METRICS,
    PROBS,
    SCORED,
    TRAIN_INFO,
)
from tasks.layout import MODEL as MODEL_FILE
from tasks.lineage import dataset_version, git_commit, new_run_id, recorded_run_id
from tasks.params import AuditParams, PublishParams, params_from_cli
from tasks.runtimes import pointer_exports
from tasks.storage import (
    Blob,
    Conflict,
    FileHash,
    MiB,
    Store,
    StoreUnavailable,
    hash_file,
    open_store,
)

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
EXIT_TEMPFAIL = 75  # store unreachable: a retry later may succeed (exit 2 = fix the input)
CHAMPION_ATTEMPTS = 3  # champion writes lost to other publishers before giving up


@dataclass(frozen=True)
class Score:
    metric: str
    value: float
    dataset_version: str
    classes: list[str]
    class_recall: dict[str, float] | None = None  # per class, on the same test split


@dataclass(frozen=True)
class Candidate:
    """The run being published: its files (hashed once) and its score on the test split."""

    run_id: str
    files: dict[str, Path]  # path relative to the project -> file
    hashes: dict[str, FileHash]
    score: Score
    model: str  # publish.model, e.g. models/fine_tune
    exports: dict[str, dict] | None  # the model's published exports (champion.json's `exports`)
    temperature: float = 1.0  # the model's calibration (train.json); predict applies it

    @property
    def prefix(self) -> str:
        return f"runs/{self.run_id}"


@dataclass(frozen=True)
class Verdict:
    """The gate's answer against the champion it read (and the version it read)."""

    promote: bool
    reason: str
    held: bool  # this run is the champion already
    champion: dict | None
    version: str | None  # the champion's version in the store: the write's IfMatch


@dataclass(frozen=True)
class DataCheck:
    """The audit stage's word on this run's data: its summary and its drift fingerprint."""

    summary: dict | None  # summary.json; its `drift` when audit.reference_* was given
    fingerprint: Path | None  # fingerprint.npz: compared with the champion's otherwise
    cfg: AuditParams


@dataclass(frozen=True)
class Plan:
    """Everything publish will write, decided before the first write."""

    uploads: dict[str, tuple[Path, FileHash]]  # key -> file; empty when published before
    manifest_key: str
    manifest: bytes | None  # None: this run was published before with the same files
    manifest_sha256: str
    verdict: Verdict


def publish(
    *,
    store: Store,
    cfg: PublishParams,
    run_id: str,
    prepared: Prepared,
    dataset_version: str,
    git_commit: str | None,
    params: dict[str, Any],
    metrics: dict[str, Any] | None,
    root: Path = Path("."),
    evaluated: Path | None = None,
    exports_dir: str | None = None,
    report: str | None = None,
    data: DataCheck | None = None,
) -> dict[str, Any]:
    """Plan (read, hash, score, gate: nothing written), then apply: the run's files, its
    manifest, and last the champion, if the gate says so.

    `data`: the audit's outputs; the drift of this run's data against the reference the
    audit was given, else against the champion's published fingerprint, goes into the
    manifest (`drift`), the record (`drifted`, `drifted_classes`) and the uploaded report.

    `report`: visualize.report; when it is among the files, the copy uploaded carries the
    gate's decision in its answer (tasks.headline.with_decision).

    `evaluated`: the evaluate stage's details folder of `publish.model`; its test-split
    predictions are reused when they are provably of this model file and these labels.
    `exports_dir`: export.out_dir; `<exports_dir>/<model name>/`, when among the files, holds
    the model's serving exports, which the manifest and champion.json then point to.
    """
    files = collect(cfg.artifacts, root=root)
    manifest_key = f"runs/{run_id}/{MANIFEST}"
    existing = store.get(manifest_key)  # first store call: fails fast if the store is down
    published = _parse(store, manifest_key, existing)
    uri = f"{store.uri}/runs/{run_id}"
    report = report if report in files else None
    run = candidate(
        cfg=cfg,
        run_id=run_id,
        files=files,
        root=root,
        uri=uri,
        existing=published,
        prepared=prepared,
        dataset_version=dataset_version,
        evaluated=evaluated,
        exports_dir=exports_dir,
        decided=report,
    )

    judge = functools.partial(verdict_on, store=store, run=run, cfg=cfg, prepared=prepared)
    verdict = judge(store.get(CHAMPION))
    drift = published.get("drift") if published else data_drift(store, data, verdict.champion)
    with tempfile.TemporaryDirectory() as tmp:
        if report:  # the uploaded report says what the gate decided (its manifest's decision)
            decision = (
                published["decision"] if published else decision_of(run.score, verdict)
            ) | drift_verdict(drift)
            run = with_decided_report(run, report, decision, Path(tmp) / Path(report).name)
            same_files(published, run.hashes, uri=uri)
        plan = plan_run(
            run,
            verdict,
            existing=existing,
            git_commit=git_commit,
            dataset_version=dataset_version,
            params=params,
            metrics=metrics,
            drift=drift,
        )
        uploaded = apply(store, plan)
    verdict = promote(store, run, plan, judge)
    decision = decision_of(run.score, verdict)
    log.info(
        "%s -> %s/%s: %s (%s)", run_id, store.uri, run.prefix, decision["status"], verdict.reason
    )
    return {
        "run_id": run_id,
        "uri": f"{store.uri}/{run.prefix}",
        "manifest": plan.manifest_key,
        "files": len(run.files),
        "uploaded": uploaded,
        "dataset_version": dataset_version,
        "report": f"{uri}/{report}" if report else None,
        **decision,
        **drift_verdict(drift),
    }


def data_drift(store: Store, data: DataCheck | None, champion: dict | None) -> dict | None:
    """The manifest's `drift`: the audit's verdict against the reference it was given, else
    this run's fingerprint against the champion's; None when neither can be compared."""
    if data is None:
        return None
    if (data.summary or {}).get("drift"):
        return drift_of(data.summary)
    if champion is None or data.fingerprint is None or not data.fingerprint.is_file():
        return None
    return drift_of({"drift": champion_drift(store, champion, data)})


def champion_drift(store: Store, champion: dict, data: DataCheck) -> dict | None:
    """This run's fingerprint against the one published with the champion (downloaded and
    checked against the sha256 its manifest records); None when the champion has none."""
    from tasks.auditing import drift

    key = champion.get("manifest")
    blob = store.get(key) if key else None
    if blob is None or hashlib.sha256(blob.data).hexdigest() != champion.get("manifest_sha256"):
        log.warning("%s: no verified champion manifest; drift not checked", store.uri)
        return None
    manifest = json.loads(blob.data)
    folder = ((manifest.get("params") or {}).get("audit") or {}).get("out_dir", data.cfg.out_dir)
    entry = next(
        (f for f in manifest.get("files", []) if f["path"] == f"{folder}/{AUDIT_FINGERPRINT}"),
        None,
    )
    if entry is None:
        log.warning("champion %s has no data fingerprint; drift not checked", champion["run_id"])
        return None
    remote = f"{Path(key).parent.as_posix()}/{entry['path']}"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / AUDIT_FINGERPRINT
        store.get_file(remote, path)
        if file_digest(path) != entry["sha256"]:
            raise UserError(
                f"{store.uri}/{remote}: sha256 does not match the champion's manifest; "
                "the champion's run is damaged"
            )
        reference = drift.load_fingerprint(path, what=f"{store.uri}/{remote}")
    new = drift.load_fingerprint(data.fingerprint, what=str(data.fingerprint))
    verdict = drift.compare_with(reference, new, data.cfg)
    reference_run = {
        "champion_run": champion["run_id"],
        "dataset_version": champion.get("dataset_version"),
    }
    return {"reference": reference_run, **verdict}


def drift_of(audit: dict | None) -> dict | None:
    """The manifest's `drift` from a verdict shaped as the audit's summary.json holds it, or
    None when no reference was compared."""
    shifted = (audit or {}).get("drift")
    if not shifted:
        return None
    embeddings = shifted.get("embeddings") or {}
    return {
        "drifted": bool(shifted.get("drifted")),
        "pixels_drifted": shifted.get("pixels_drifted"),
        "mean_shift": (shifted.get("pixels") or {}).get("mean_shift"),
        "p_value": embeddings.get("p_value"),
        "domain_auc": embeddings.get("domain_auc"),
        "most_shifted_classes": embeddings.get("most_shifted_classes") or {},
        "reference": shifted.get("reference"),
    }


def drift_verdict(drift: dict | None) -> dict[str, Any]:
    """The record's drift fields: drifted (None: not checked) and the most shifted classes."""
    if drift is None:
        return {"drifted": None, "drifted_classes": []}
    classes = list(drift["most_shifted_classes"]) if drift["drifted"] else []
    return {"drifted": drift["drifted"], "drifted_classes": classes}


def candidate(
    *,
    cfg: PublishParams,
    run_id: str,
    files: dict[str, Path],
    root: Path,
    uri: str,
    existing: dict | None,
    prepared: Prepared,
    dataset_version: str,
    evaluated: Path | None,
    exports_dir: str | None = None,
    decided: str | None = None,
) -> Candidate:
    """The run's files, hashed, and its score; a run id published before must hold the same
    files (but for `decided`, the report publish fills the decision into: checked once it
    is filled in)."""
    hashes = {rel: hash_file(path) for rel, path in files.items()}
    same_files(existing, hashes, uri=uri, skip=decided)
    model = hashes.get(f"{cfg.model}/{MODEL_FILE}")
    new = score(
        model_file=root / cfg.model / MODEL_FILE,
        prepared=prepared,
        metric=cfg.metric,
        dataset_version=dataset_version,
        batch_size=cfg.batch_size,
        evaluated=evaluated,
        model_sha256=model.sha256 if model else None,
    )
    exports = published_exports(
        files, hashes, model=cfg.model, exports_dir=exports_dir, prefix=f"runs/{run_id}"
    )
    info = root / cfg.model / TRAIN_INFO
    temperature = temperature_of(json.loads(info.read_text())) if info.is_file() else 1.0
    return Candidate(run_id, files, hashes, new, cfg.model, exports, temperature)


def published_exports(
    files: dict[str, Path],
    hashes: dict[str, FileHash],
    *,
    model: str,
    exports_dir: str | None,
    prefix: str,
) -> dict[str, dict] | None:
    """`model`'s exports among the run's files as champion.json points to them, each
    checked against its export.json; None when the run carries no export of `model`."""
    folder = f"{exports_dir}/{Path(model).name}"
    info_file = files.get(f"{folder}/{EXPORT_INFO}") if exports_dir else None
    if info_file is None:
        return None
    info = json.loads(info_file.read_text())
    if info.get("model_sha256") != hashes[f"{model}/{MODEL_FILE}"].sha256:
        raise UserError(
            f"{folder} was exported from another {model}/{MODEL_FILE} than this one; "
            "run the export stage again (`dvc repro export`)"
        )
    folders = {}
    for fmt, entry in info["formats"].items():
        key = f"{folder}/{entry['file']}"
        inside = {
            rel.removeprefix(key + "/"): h.sha256
            for rel, h in hashes.items()
            if rel.startswith(key + "/")
        }
        got = hashes[key].sha256 if key in hashes else lines_digest(inside) if inside else None
        if got != entry["sha256"]:
            raise UserError(
                f"{key}: missing or not the file its {EXPORT_INFO} checked (sha256); "
                "run the export stage again (`dvc repro export`)"
            )
        if inside:
            folders[fmt] = inside
    return pointer_exports(info, prefix=f"{prefix}/{folder}", folders=folders)


def same_files(
    published: dict | None, hashes: dict[str, FileHash], *, uri: str, skip: str | None = None
) -> None:
    """A run id published before must hold the same files (but `skip`)."""
    if published is None:
        return
    table = [f for f in _file_table(published) if f["path"] != skip]
    if table != [f for f in _table(hashes) if f["path"] != skip]:
        raise UserError(
            f"{uri} was already published with different files; set "
            "a new publish.run_id (published runs are never overwritten)"
        )


def with_decided_report(run: Candidate, report: str, decision: dict, path: Path) -> Candidate:
    """`run` with its report replaced by a copy at `path` that states `decision`."""
    from tasks.headline import with_decision

    html = run.files[report].read_text(encoding="utf-8")
    path.write_text(with_decision(html, decision), encoding="utf-8")
    files, hashes = dict(run.files), dict(run.hashes)
    files[report], hashes[report] = path, hash_file(path)
    return replace(run, files=files, hashes=hashes)


def verdict_on(
    champion: Blob | None, *, store: Store, run: Candidate, cfg: PublishParams, prepared: Prepared
) -> Verdict:
    """The gate's verdict on `run` against the champion pointer as read from the store."""
    pointer = _parse(store, CHAMPION, champion)
    promote, reason, held = gate(
        store=store, champion=pointer, new=run.score, run_id=run.run_id, cfg=cfg, prepared=prepared
    )
    return Verdict(promote, reason, held, pointer, champion.version if champion else None)


def plan_run(
    run: Candidate,
    verdict: Verdict,
    *,
    existing: Blob | None,
    git_commit: str | None,
    dataset_version: str,
    params: dict[str, Any],
    metrics: dict[str, Any] | None,
    drift: dict | None = None,
) -> Plan:
    """What to write: every file and a new manifest, or nothing when published before."""
    key = f"{run.prefix}/{MANIFEST}"
    if existing is not None:
        return Plan({}, key, None, hashlib.sha256(existing.data).hexdigest(), verdict)
    manifest = _dumps(
        {
            "manifest_version": MANIFEST_VERSION,
            "run_id": run.run_id,
            "published_at": _now(),
            "git_commit": git_commit,
            "dataset_version": dataset_version,
            "model": f"{run.prefix}/{run.model}",
            "classes": run.score.classes,
            "params": params,
            "metrics": metrics,
            "decision": decision_of(run.score, verdict),  # the gate's, when it was published
            "files": _table(run.hashes),
            "exports": run.exports,
            "temperature": run.temperature,
            "drift": drift,  # the audit's verdict against the champion's data (None: unchecked)
        }
    )
    uploads = {f"{run.prefix}/{rel}": (path, run.hashes[rel]) for rel, path in run.files.items()}
    return Plan(uploads, key, manifest, hashlib.sha256(manifest).hexdigest(), verdict)


def apply(store: Store, plan: Plan) -> int:
    """Upload the files the store lacks, then the manifest: from then on the run is
    complete. Returns the number of files sent."""
    uploaded = sum(upload(store, key, path, digest) for key, (path, digest) in plan.uploads.items())
    if plan.manifest is None:
        log.info("%s/%s exists with the same files; nothing uploaded", store.uri, plan.manifest_key)
        return uploaded
    try:
        store.put_bytes(plan.manifest_key, plan.manifest, if_absent=True)
    except Conflict:
        raise UserError(
            f"{store.uri}/{plan.manifest_key} was published meanwhile by another publisher "
            "under the same run id; set a new publish.run_id"
        ) from None
    return uploaded


def promote(store: Store, run: Candidate, plan: Plan, judge) -> Verdict:
    """Write champion.json, last, if the gate says so, and only over the champion the gate
    read (a conditional write): a publisher that lost a race is gated again against the
    champion that won it."""
    verdict = plan.verdict
    for _ in range(CHAMPION_ATTEMPTS):
        if not verdict.promote:
            return verdict
        pointer = champion_pointer(run, plan, verdict.champion)
        try:
            store.put_bytes(
                CHAMPION, _dumps(pointer), if_match=verdict.version, if_absent=not verdict.version
            )
            return verdict
        except Conflict:
            log.warning("%s changed while %s was published; gating again", CHAMPION, run.run_id)
            verdict = judge(store.get(CHAMPION))
    raise UserError(
        f"{store.uri}/{CHAMPION} kept changing while {run.run_id} was published; publish "
        "the same run again later (nothing is uploaded twice)"
    )


def champion_pointer(run: Candidate, plan: Plan, previous: dict | None) -> dict[str, Any]:
    model = f"{run.model}/{MODEL_FILE}"
    return {
        "run_id": run.run_id,
        "model": f"{run.prefix}/{model}",
        "model_sha256": run.hashes[model].sha256,
        "exports": run.exports or {},
        "temperature": run.temperature,  # calibrates the .keras model (exports have it built in)
        "manifest": plan.manifest_key,
        "manifest_sha256": plan.manifest_sha256,
        "dataset_version": run.score.dataset_version,
        "classes": run.score.classes,
        "metric": run.score.metric,
        "value": run.score.value,
        "class_recall": run.score.class_recall,  # the class-level gate's reference
        "split": "test",
        "promoted_at": _now(),
        "previous": {k: previous.get(k) for k in ("run_id", "value", "dataset_version")}
        if previous
        else None,
    }


def decision_of(new: Score, verdict: Verdict) -> dict[str, Any]:
    champion = verdict.champion
    return {
        "status": "champion" if verdict.promote or verdict.held else "challenger",
        "promoted": verdict.promote,  # champion.json now points to this run (not: held already)
        "reason": verdict.reason,
        "metric": new.metric,
        "value": new.value,
        "champion_run": champion.get("run_id") if champion else None,
        "champion_value": champion.get("value") if champion else None,
    }


def collect(artifacts: tuple[str, ...], *, root: Path) -> dict[str, Path]:
    """{path relative to the project: file} for every file under the listed artifacts."""
    files: dict[str, Path] = {}
    for item in artifacts:
        if Path(item).is_absolute() or ".." in Path(item).parts:
            raise UserError(f"publish.artifacts: {item!r} must be a path inside the project")
        path = root / item
        if path.is_file():
            files[item] = path
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                files[f.relative_to(root).as_posix()] = f
        else:
            raise UserError(
                f"publish.artifacts: {item} does not exist; run the stage that "
                "writes it (`dvc repro`) or remove it from the list"
            )
    return files


def upload(store: Store, key: str, path: Path, digest: FileHash) -> int:
    """Upload one verified file unless the same bytes are already there; returns 1 if sent."""
    have = store.head(key)
    if have is not None and have.size == digest.size and have.sha256 == digest.sha256:
        return 0
    store.put_file(key, path, digest)
    return 1


def score(
    *,
    model_file: Path,
    prepared: Prepared,
    metric: str,
    dataset_version: str,
    batch_size: int,
    evaluated: Path | None = None,
    model_sha256: str | None = None,
) -> Score:
    """`metric` of a saved model on the prepared test split, as `tasks.evaluate` computes it.

    With `evaluated` (metrics/details/<model>/) holding predictions of this very file (its
    sha256, `model_sha256` when the caller has it) on these very test labels, those are
    used: no TensorFlow, no second predict().
    """
    from tasks.evaluate import compute_metrics

    if not model_file.is_file():
        raise UserError(
            f"{model_file}: no model to publish; train it first (`dvc repro`) or "
            "set publish.model to a trained model folder"
        )
    labels = prepared.labels("test")
    if len(labels) == 0:
        raise UserError("the test split is empty; nothing to score the model on")
    probs = _evaluated_probs(evaluated, model_sha256 or file_digest(model_file), labels)
    if probs is None:
        from tasks.evaluate import predict  # tensorflow: only when scoring
        from tasks.model import load_model

        probs = predict(load_model(model_file), prepared.images("test"), batch_size)  # (N, C)
    if probs.shape[1] != len(prepared.classes):
        raise UserError(
            f"{model_file}: {probs.shape[1]} outputs but the dataset has "
            f"{len(prepared.classes)} classes; retrain on this dataset"
        )
    value = compute_metrics(labels, probs)[metric]
    return Score(
        metric,
        float(value),
        dataset_version,
        prepared.classes,
        class_recall(labels, probs.argmax(axis=1), prepared.classes),
    )


def class_recall(labels, predicted, classes: list[str]) -> dict[str, float]:
    """{class: recall} on the test split (scikit-learn's; a class absent from it: 0)."""
    from sklearn.metrics import recall_score

    recall = recall_score(
        labels, predicted, labels=list(range(len(classes))), average=None, zero_division=0
    )
    return {c: round(float(r), 6) for c, r in zip(classes, recall, strict=True)}


def _evaluated_probs(folder: Path | None, model_sha256: str, labels) -> Any:
    """probs.npy of the evaluate stage if they are of the model file with this sha256 on
    these test labels."""
    import numpy as np

    from tasks.evaluate import labels_digest

    if folder is None or not (folder / SCORED).is_file() or not (folder / PROBS).is_file():
        return None
    record = json.loads((folder / SCORED).read_text())
    same = (
        record.get("split") == "test"
        and record.get("labels_sha256") == labels_digest(labels)
        and record.get("model_sha256") == model_sha256
    )
    if not same:
        log.info("%s: predictions of another model or split; scoring the model again", folder)
        return None
    probs = np.load(folder / "probs.npy", allow_pickle=False)
    if probs.ndim != 2 or len(probs) != len(labels):
        return None
    log.info("scored from %s/probs.npy (same model file and test split)", folder)
    return probs


def gate(
    *,
    store: Store,
    champion: dict | None,
    new: Score,
    run_id: str,
    cfg: PublishParams,
    prepared: Prepared,
) -> tuple[bool, str, bool]:
    """(promote, why, already champion): does `new` beat the champion on this test set?"""
    if champion is None:
        return True, "no champion yet", False
    if champion.get("run_id") == run_id:
        return False, "this run is already the champion", True
    if champion.get("classes") != new.classes:
        return True, "the classes changed; the old champion answers another question", False
    recorded = (
        champion.get("metric") == cfg.metric
        and champion.get("dataset_version") == new.dataset_version
        and (cfg.max_class_drop is None or champion.get("class_recall"))
    )
    if recorded:
        old = Score(
            cfg.metric,
            float(champion["value"]),
            new.dataset_version,
            new.classes,
            champion.get("class_recall"),
        )
    else:  # another test set or metric (or no per-class record): score it again on this one
        old = rescore_champion(
            store, champion, cfg=cfg, prepared=prepared, dataset_version=new.dataset_version
        )
        champion["value"], champion["dataset_version"] = old.value, new.dataset_version
    promote, why, held = decide(
        new=new.value, old=old.value, min_improvement=cfg.min_improvement, metric=cfg.metric
    )
    limit = cfg.max_class_drop
    if promote and limit is not None:
        drop = class_drop(old.class_recall or {}, new.class_recall or {}, limit)
        if drop:
            return False, f"{why}, but {drop}", False
    return promote, why, held


def class_drop(old: dict[str, float], new: dict[str, float], limit: float) -> str | None:
    """The class whose recall fell the most, if by more than `limit`, in words; else None."""
    drops = {c: old[c] - new[c] for c in old.keys() & new.keys()}
    worst = max(drops, key=drops.get, default=None)
    if worst is None or drops[worst] <= limit + 1e-9:
        return None
    return (
        f"the recall of class '{worst}' drops from {old[worst]:.4f} to {new[worst]:.4f} "
        f"(by more than publish.max_class_drop {limit})"
    )


def decide(
    *, new: float, old: float, min_improvement: float, metric: str
) -> tuple[bool, str, bool]:
    if new > old + min_improvement:
        return (
            True,
            f"{metric} {new:.4f} beats the champion's {old:.4f} by more than {min_improvement}",
            False,
        )
    return (
        False,
        f"{metric} {new:.4f} does not beat the champion's {old:.4f} by more than {min_improvement}",
        False,
    )


def rescore_champion(
    store: Store, champion: dict, *, cfg: PublishParams, prepared: Prepared, dataset_version: str
) -> Score:
    """Download the champion's model, check its sha256, score it on this test split."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        store.get_file(champion["model"], path)
        if file_digest(path) != champion.get("model_sha256"):
            raise UserError(
                f"{store.uri}/{champion['model']}: sha256 does not match "
                f"{CHAMPION}; the champion is damaged, fix or delete {CHAMPION}"
            )
        log.info(
            "champion %s was scored on another dataset version or metric, or without "
            "per-class recall; re-scoring it",
            champion.get("run_id"),
        )
        return score(
            model_file=path,
            prepared=prepared,
            metric=cfg.metric,
            dataset_version=dataset_version,
            batch_size=cfg.batch_size,
        )


def _table(hashes: dict[str, FileHash]) -> list[dict[str, Any]]:
    return [{"path": k, "sha256": h.sha256, "size": h.size} for k, h in sorted(hashes.items())]


def _file_table(manifest: dict) -> list[dict[str, Any]]:
    return sorted(manifest.get("files", []), key=lambda f: f["path"])


def _parse(store: Store, key: str, blob: Blob | None) -> dict | None:
    if blob is None:
        return None
    try:
        return json.loads(blob.data)
    except ValueError:
        raise UserError(f"{store.uri}/{key} is not valid JSON; fix or delete it") from None


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, default=str) + "\n").encode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _details_of(model: str, params) -> Path | None:
    """metrics/details/<name>/ of `publish.model` (models/<name>), when it is one."""
    try:
        name = Path(model).relative_to(params.train.models_dir)
    except ValueError:
        return None
    return Path(params.evaluate.out_dir) / DETAILS / name


def main() -> None:
    params = params_from_cli(__doc__)
    cfg = params.publish
    commit = git_commit(os.environ.get("GIT_COMMIT"))
    prepared_dir = Path(params.data.prepared_dir)
    metrics_file = Path(params.evaluate.out_dir) / METRICS
    store = open_store(
        cfg.destination,
        endpoint_url=cfg.endpoint_url,
        profile=cfg.profile,
        retries=cfg.retries,
        timeout=cfg.timeout,
        multipart_threshold=cfg.multipart_threshold_mb * MiB,
        multipart_chunk=cfg.multipart_chunk_mb * MiB,
    )
    try:
        record = publish(
            store=store,
            cfg=cfg,
            run_id=cfg.run_id
            or recorded_run_id(Path(params.visualize.out_dir))
            or new_run_id(commit),
            prepared=open_prepared(prepared_dir),
            dataset_version=dataset_version(prepared_dir),
            git_commit=commit,
            params=params.to_dict(),
            metrics=json.loads(metrics_file.read_text()) if metrics_file.is_file() else None,
            evaluated=_details_of(params.publish.model, params),
            exports_dir=params.export.out_dir,
            report=params.visualize.report,
            data=DataCheck(
                summary=_audit_summary(Path(params.audit.out_dir)),
                fingerprint=Path(params.audit.out_dir) / AUDIT_FINGERPRINT,
                cfg=params.audit,
            ),
        )
    except StoreUnavailable as e:  # the champion and the bucket are untouched
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_TEMPFAIL)
    atomic_write_json(Path(cfg.record), record)
    print(
        f"published {record['run_id']} to {record['uri']} as {record['status']}: {record['reason']}"
    )
    if record["drifted"]:
        print(f"retrained on drifted data (most shifted: {', '.join(record['drifted_classes'])})")


def _audit_summary(folder: Path) -> dict | None:
    """The audit stage's summary.json, or None when it did not run (a hand-made project)."""
    path = folder / AUDIT_SUMMARY
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


if __name__ == "__main__":
    run_main(main)
