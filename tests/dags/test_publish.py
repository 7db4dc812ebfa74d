"""Publishing: layout, manifest checksums, champion gate, idempotency, a store that is down.

Models here are tiny Keras models that always answer one class, so their test accuracy is
known from the labels alone (class 0 wins on a test split that is mostly 0s).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tasks.auditing import drift
from tasks.common import UserError
from tasks.dataset import open_prepared
from tasks.params import PublishParams, load_params, section
from tasks.publish import DataCheck, publish
from tasks.storage import Conflict, FileHash, MiB, hash_file, open_store
from tests.conftest import ROOT, free_port
from tests.helpers import random_images, write_prepared

CLASSES = ["zero", "one", "two"]
SIZE = 8


def constant_model(path: Path, answer: int, n_classes: int = len(CLASSES)) -> Path:
    """A saved uint8-in model that always predicts class `answer`."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="image")  # as tasks.model names it
    x = keras.layers.Flatten()(keras.layers.Rescaling(0.0)(inputs))  # all zeros
    bias = np.full(n_classes, -5.0, np.float32)
    bias[answer] = 5.0
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", bias_initializer=keras.initializers.Constant(bias)
    )(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, outputs).save(path)
    return path


def project(root: Path, *, test_labels: list[int], answer: int, extra: bytes = b"") -> Path:
    """A project folder with a prepared dataset, a model, metrics and a report."""
    labels = np.array(test_labels)
    write_prepared(
        root / "data/prepared",
        {
            "train": (random_images(6, SIZE), np.array([0, 1, 2, 0, 1, 2])),
            "test": (random_images(len(labels), SIZE, seed=1), labels),
        },
        CLASSES,
    )
    constant_model(root / "models/m/model.keras", answer)
    (root / "models/m/history.json").write_text(json.dumps({"answer": answer}))
    (root / "models/m/train.json").write_text(json.dumps({"calibration": {"temperature": 1.7}}))
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics/metrics.json").write_text(json.dumps({"m": {"accuracy": 0.5}}))
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports/report.html").write_bytes(b"<html>report</html>" + extra)
    return root


REPORT = "reports/report.html"
CFG = section(
    "publish",
    artifacts=("models/m", "metrics", "reports/report.html"),
    model="models/m",
    retries=2,
    timeout=2,
)


def run(
    root: Path,
    store,
    run_id: str,
    *,
    version: str = "md5:v1",
    cfg: PublishParams = CFG,
    exports_dir: str | None = None,
    report: str | None = None,
    data: DataCheck | None = None,
):
    return publish(
        store=store,
        cfg=cfg,
        run_id=run_id,
        prepared=open_prepared(root / "data/prepared"),
        dataset_version=version,
        git_commit="abc123",
        params={"publish": {"model": cfg.model}},
        metrics={"m": {"accuracy": 0.5}},
        root=root,
        exports_dir=exports_dir,
        report=report,
        data=data,
    )


def read(store, key: str) -> dict:
    return json.loads(store.get_bytes(key))


def assert_manifest_matches(store, run_id: str, root: Path) -> dict:
    manifest = read(store, f"runs/{run_id}/manifest.json")
    assert {f["path"] for f in manifest["files"]} == {
        "models/m/model.keras",
        "models/m/history.json",
        "models/m/train.json",
        "metrics/metrics.json",
        "reports/report.html",
    }
    for f in manifest["files"]:
        data = store.get_bytes(f"runs/{run_id}/{f['path']}")
        assert (
            hashlib.sha256(data).hexdigest()
            == f["sha256"]
            == hashlib.sha256((root / f["path"]).read_bytes()).hexdigest()
        )
        assert len(data) == f["size"]
    return manifest


@pytest.mark.slow
def test_local_publish_gate_and_idempotent_republish(tmp_path: Path) -> None:
    root = project(tmp_path / "p", test_labels=[0, 0, 0, 1, 2], answer=0)  # accuracy 0.6
    store = open_store(str(tmp_path / "store"))

    first = run(root, store, "run-1")
    assert first["status"] == "champion" and first["value"] == pytest.approx(0.6)
    assert first["promoted"] is True
    manifest = assert_manifest_matches(store, "run-1", root)
    assert manifest["dataset_version"] == "md5:v1" and manifest["git_commit"] == "abc123"
    champion = read(store, "champion.json")
    assert champion["run_id"] == "run-1"
    assert champion["model"] == "runs/run-1/models/m/model.keras"
    assert champion["temperature"] == manifest["temperature"] == 1.7  # what predict applies

    # the same run again: nothing uploaded, manifest and champion untouched
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*")}
    again = run(root, store, "run-1")
    assert again["uploaded"] == 0 and again["status"] == "champion"
    assert again["promoted"] is False  # held: champion.json was not written again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*")} == before

    # a worse model (always "one": accuracy 0.2) is published as a challenger
    constant_model(root / "models/m/model.keras", answer=1)
    worse = run(root, store, "run-2")
    assert worse["status"] == "challenger" and "does not beat" in worse["reason"]
    assert worse["promoted"] is False
    assert read(store, "champion.json") == champion
    assert_manifest_matches(store, "run-2", root)


@pytest.mark.slow
def test_the_manifest_records_the_audits_drift_verdict(tmp_path: Path) -> None:
    from tasks.headline import decision_html

    root = project(tmp_path / "p", test_labels=[0, 0, 1], answer=0)
    (root / "reports/report.html").write_text(f"<h1>Run</h1>{decision_html(None)}")
    store = open_store(str(tmp_path / "store"))
    unchecked = run(root, store, "run-1")  # no audit summary: drift was not checked
    assert unchecked["drifted"] is None and read(store, "runs/run-1/manifest.json")["drift"] is None

    summary = {  # the audit stage's summary.json, drift part (tasks.audit.check_drift)
        "drifted": True,
        "drift": {
            "reference": {"features": "ref/features", "prepared": "ref/prepared"},
            "pixels": {"mean_shift": [1.0, 0.5, 0.2]},
            "pixels_drifted": False,
            "embeddings": {
                "p_value": 0.004,
                "domain_auc": 0.71,
                "drifted": True,
                "most_shifted_classes": {"two": 0.09, "one": 0.01},
            },
            "drifted": True,
        },
    }
    checked = DataCheck(summary=summary, fingerprint=None, cfg=section("audit"))
    drifted = run(root, store, "run-2", data=checked, report=REPORT)
    assert drifted["drifted"] is True and drifted["drifted_classes"] == ["two", "one"]
    drift = read(store, "runs/run-2/manifest.json")["drift"]
    assert drift["drifted"] and drift["p_value"] == 0.004 and drift["domain_auc"] == 0.71
    assert list(drift["most_shifted_classes"]) == ["two", "one"]
    # ... and the report it uploads says so beside the champion line
    html = store.get_bytes("runs/run-2/reports/report.html").decode()
    assert "Retrained on drifted data:" in html and "most shifted classes: two, one" in html


def fingerprint(path: Path, *, seed: int, shift_class: str | None = None) -> Path:
    """A data fingerprint as the audit writes it: 300 embeddings of 3 classes around their
    class centres; `shift_class`'s embeddings moved (drift in that class only)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(0, 1, (3, 16))
    y = np.repeat(CLASSES, 100)
    x = centres[np.repeat(np.arange(3), 100)] + rng.normal(0, 0.5, (300, 16))
    if shift_class:
        x[y == shift_class] += 1.5
    path.parent.mkdir(parents=True, exist_ok=True)
    drift.save_fingerprint(
        drift.Fingerprint(x.astype(np.float32), y, "backbone-sha", [120.0] * 3, [60.0] * 3), path
    )
    return path


@pytest.mark.slow
def test_without_a_reference_the_run_is_compared_with_the_champions_fingerprint(
    tmp_path: Path,
) -> None:
    root = project(tmp_path / "p", test_labels=[0, 0, 1], answer=0)
    store = open_store(str(tmp_path / "store"))
    cfg = dataclasses.replace(CFG, artifacts=(*CFG.artifacts, "reports/audit"))
    fp = root / "reports/audit/fingerprint.npz"

    def publish_with(run_id: str, **kw) -> dict:
        fingerprint(fp, **kw)
        check = DataCheck(summary={"drift": None}, fingerprint=fp, cfg=section("audit"))
        return run(root, store, run_id, cfg=cfg, data=check)

    first = publish_with("run-1", seed=1)  # no champion yet: nothing to compare with
    assert first["status"] == "champion" and first["drifted"] is None
    same = publish_with("run-2", seed=2)  # new draw, same distribution
    assert same["drifted"] is False
    assert read(store, "runs/run-2/manifest.json")["drift"]["reference"] == {
        "champion_run": "run-1",
        "dataset_version": "md5:v1",
    }
    moved = publish_with("run-3", seed=3, shift_class="two")
    assert moved["drifted"] is True and moved["drifted_classes"][0] == "two"

    # the champion's fingerprint changed behind its manifest's back: refused, nothing written
    (tmp_path / "store/runs/run-1/reports/audit/fingerprint.npz").write_bytes(b"not it")
    with pytest.raises(UserError, match="sha256 does not match the champion's manifest"):
        publish_with("run-4", seed=4)
    assert store.get_bytes("runs/run-4/manifest.json") is None


@pytest.mark.slow
def test_the_published_report_says_what_the_gate_decided(tmp_path: Path) -> None:
    from tasks.headline import decision_html

    pending = f"<h1>Run</h1>{decision_html(None)}<p>figures</p>".encode()
    root = project(tmp_path / "p", test_labels=[0, 0, 0, 1, 2], answer=0)
    (root / "reports/report.html").write_bytes(pending)
    store = open_store(str(tmp_path / "store"))

    def published(run_id: str) -> str:
        return store.get_bytes(f"runs/{run_id}/reports/report.html").decode()

    first = run(root, store, "run-1", report=REPORT)
    assert first["report"] == f"{store.uri}/runs/run-1/reports/report.html"
    page = published("run-1")
    assert "New champion:" in page and "no champion yet" in page and "not decided" not in page
    assert page.endswith("<p>figures</p>")
    assert (root / "reports/report.html").read_bytes() == pending  # visualize's output kept
    entry = next(
        f for f in read(store, "runs/run-1/manifest.json")["files"] if f["path"].endswith(".html")
    )
    assert entry["sha256"] == hashlib.sha256(page.encode()).hexdigest()

    # published again: the same decided bytes, so nothing is uploaded and nothing refused
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*")}
    assert run(root, store, "run-1", report=REPORT)["uploaded"] == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "store").rglob("*")} == before

    constant_model(root / "models/m/model.keras", answer=1)  # 0.2: a challenger
    run(root, store, "run-2", report=REPORT)
    assert "Challenger:" in published("run-2") and "the champion stays run run-1" in published(
        "run-2"
    )


@pytest.mark.slow
def test_republish_with_other_files_under_the_same_run_id_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path / "p", test_labels=[0, 1], answer=0)
    store = open_store(str(tmp_path / "store"))
    run(root, store, "run-1")
    (root / "reports/report.html").write_text("changed")
    with pytest.raises(UserError, match="already published with different files"):
        run(root, store, "run-1")
    assert (tmp_path / "store/runs/run-1/reports/report.html").read_bytes() != b"changed"


@pytest.mark.slow
def test_champion_from_another_dataset_version_is_rescored(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    old = project(tmp_path / "old", test_labels=[0, 0, 0, 0, 1], answer=0)  # 0.8 on v1
    run(old, store, "run-1", version="md5:v1")
    # New data where class 1 dominates: the old champion would score 0.2 here, the new 0.8.
    # Compared with the recorded 0.8 the new model would never win; re-scored, it does.
    new = project(tmp_path / "new", test_labels=[1, 1, 1, 1, 0], answer=1)
    overall = dataclasses.replace(CFG, max_class_drop=None)  # class 'zero' goes 1.0 -> 0.0
    result = run(new, store, "run-2", version="md5:v2", cfg=overall)
    assert result["status"] == "champion"
    assert "0.2000" in result["reason"]
    champion = read(store, "champion.json")
    assert champion["run_id"] == "run-2" and champion["dataset_version"] == "md5:v2"
    assert champion["previous"]["run_id"] == "run-1"


@pytest.mark.slow
def test_a_better_model_that_loses_a_class_stays_a_challenger(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    root = project(tmp_path / "p", test_labels=[0, 0, 0, 1, 2], answer=1)  # 0.2, 'one' 1.0
    run(root, store, "run-1")
    champion = read(store, "champion.json")
    assert champion["class_recall"] == {"zero": 0.0, "one": 1.0, "two": 0.0}

    constant_model(root / "models/m/model.keras", answer=0)  # 0.6 overall, 'one' 1.0 -> 0.0
    result = run(root, store, "run-2")
    assert result["status"] == "challenger" and result["promoted"] is False
    assert "the recall of class 'one' drops from 1.0000 to 0.0000" in result["reason"]
    assert "0.6000 beats the champion's 0.2000" in result["reason"]
    assert read(store, "champion.json") == champion
    decision = read(store, "runs/run-2/manifest.json")["decision"]
    assert "class 'one'" in decision["reason"]

    # without the class-level gate the same model wins on the overall metric
    overall = dataclasses.replace(CFG, max_class_drop=None)
    assert run(root, store, "run-3", cfg=overall)["promoted"] is True


@pytest.mark.slow
def test_min_improvement_keeps_a_slightly_better_challenger_out(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "store"))
    root = project(tmp_path / "p", test_labels=[0, 0, 1, 1, 2], answer=0)  # 0.4
    run(root, store, "run-1")
    constant_model(root / "models/m/model.keras", answer=1)  # also 0.4: a tie never wins
    assert run(root, store, "run-2")["status"] == "challenger"
    strict = dataclasses.replace(CFG, min_improvement=0.5)
    (root / "data/prepared/test/labels.npy").unlink()
    write_prepared(
        root / "data/prepared",
        {"test": (random_images(5, SIZE), np.array([1, 1, 1, 0, 2]))},
        CLASSES,
    )  # same version label on purpose: recorded value is used
    result = run(root, store, "run-3", cfg=strict)  # 0.6 vs 0.4: better, but not by 0.5
    assert result["status"] == "challenger"
    assert "0.6000" in result["reason"] and "0.4000" in result["reason"]
    assert read(store, "champion.json")["run_id"] == "run-1"


@pytest.mark.slow
def test_s3_publish_multipart_verified_and_store_down_changes_nothing(
    tmp_path: Path, s3_server
) -> None:
    client = s3_server.client()
    client.create_bucket(Bucket="models")
    big = np.random.default_rng(0).bytes(11 * MiB)  # 3 parts of 5 MiB
    root = project(tmp_path / "p", test_labels=[0, 0, 1], answer=0, extra=big)
    store = open_store(
        "s3://models/team/resnet",
        endpoint_url=s3_server.endpoint_url,
        retries=2,
        timeout=2,
        multipart_threshold=5 * MiB,
        multipart_chunk=5 * MiB,
    )

    result = run(root, store, "run-1")
    assert result["status"] == "champion" and result["uploaded"] == 5
    assert_manifest_matches(store, "run-1", root)
    head = client.head_object(Bucket="models", Key="team/resnet/runs/run-1/reports/report.html")
    assert head["ETag"].strip('"').endswith("-3")  # went up as a 3-part multipart upload
    assert read(store, "champion.json")["run_id"] == "run-1"
    assert run(root, store, "run-1")["uploaded"] == 0  # idempotent on S3 too

    def listing() -> dict[str, str]:
        objects = client.list_objects_v2(Bucket="models").get("Contents", [])
        return {o["Key"]: o["ETag"] for o in objects}

    before = listing()
    down = open_store(
        "s3://models/team/resnet",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        retries=2,
        timeout=1,
    )
    constant_model(root / "models/m/model.keras", answer=1)
    with pytest.raises(UserError, match="store unreachable .* failed 2 times"):
        run(root, down, "run-2")
    assert listing() == before


def test_s3_store_names_a_missing_bucket_and_missing_credentials(s3_server, monkeypatch) -> None:
    store = open_store("s3://nope/x", endpoint_url=s3_server.endpoint_url, retries=1)
    with pytest.raises(UserError, match="bucket 'nope' does not exist"):
        store.get_bytes("champion.json")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_store("s3://nope/x", endpoint_url=s3_server.endpoint_url, retries=1)
    with pytest.raises(UserError, match="no S3 credentials"):
        store.get_bytes("champion.json")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"publish.min_improvement": 2}, "publish.min_improvement: 2.0 is out of range"),
        ({"publish.metric": "auc"}, "publish.metric: 'auc' is not allowed"),
        ({"publish.model": "models/other"}, "publish.model: 'models/other' must also be in"),
        ({"publish.run_id": "a/b"}, "publish.run_id: 'a/b': use letters"),
        ({"publish.multipart_chunk_mb": 1}, "S3 parts must be >= 5 MiB"),
    ],
)
def test_bad_publish_params_fail_with_the_key_named(override: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        load_params(overrides=override)


def test_destination_schemes() -> None:
    assert type(open_store("published")).__name__ == "LocalStore"
    assert type(open_store("file:///tmp/x")).__name__ == "LocalStore"
    with pytest.raises(UserError, match="unsupported scheme 'gs'"):
        open_store("gs://bucket/x")


@pytest.mark.slow
def test_gate_reuses_evaluate_predictions_only_for_the_same_model_and_labels(
    tmp_path: Path,
) -> None:
    from tasks.evaluate import SCORED, labels_digest, scored_record

    root = project(tmp_path / "p", test_labels=[0, 0, 0, 1], answer=0)  # the model: 0.75
    details = root / "metrics/details/m"
    details.mkdir(parents=True)
    # evaluate's record says "class 1 everywhere" (0.25): which number comes out shows
    # which source the gate used
    np.save(details / "probs.npy", np.tile(np.float32([0.1, 0.8, 0.1]), (4, 1)))
    labels = open_prepared(root / "data/prepared").labels("test")
    (details / SCORED).write_text(
        json.dumps(scored_record(root / "models/m/model.keras", "test", labels))
    )

    def gate_value(run_id: str) -> float:
        store = open_store(str(tmp_path / f"store-{run_id}"))
        return publish(
            store=store,
            cfg=CFG,
            run_id=run_id,
            prepared=open_prepared(root / "data/prepared"),
            dataset_version="md5:v1",
            git_commit=None,
            params={},
            metrics=None,
            root=root,
            evaluated=details,
        )["value"]

    assert gate_value("same") == pytest.approx(0.25)  # reused: no second predict()

    record = json.loads((details / SCORED).read_text())
    (details / SCORED).write_text(json.dumps({**record, "labels_sha256": labels_digest([1])}))
    assert gate_value("other-labels") == pytest.approx(0.75)  # scored the model itself

    (details / SCORED).write_text(json.dumps(record))
    constant_model(root / "models/m/model.keras", answer=2)  # retrained after evaluate
    assert gate_value("other-model") == pytest.approx(0.0)  # the new file, really predicted


def test_unnamed_run_takes_the_report_run_id(tmp_path: Path, monkeypatch) -> None:
    from tasks.layout import REPORT_RUN
    from tasks.lineage import recorded_run_id

    monkeypatch.chdir(tmp_path)
    params = load_params(ROOT / "params.yaml")
    figures = Path(params.visualize.out_dir)
    assert recorded_run_id(figures) is None  # no report yet: publish makes its own id
    (tmp_path / figures).mkdir()
    (tmp_path / figures / REPORT_RUN).write_text('{"run_id": "20261122T1200Z-abc"}')
    assert recorded_run_id(figures) == "20261122T1200Z-abc"


class Racer:
    """One publisher's view of a shared store: its first champion write waits until the
    other publisher is about to write too, so both have read the same old champion."""

    def __init__(self, store, barrier: threading.Barrier, accepted: list[str]) -> None:
        self.store, self.barrier, self.accepted = store, barrier, accepted
        self.uri, self.waited = store.uri, False

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def put_bytes(self, key: str, data: bytes, **condition) -> None:
        if key == "champion.json" and not self.waited:
            self.waited = True
            self.barrier.wait(timeout=60)
        self.store.put_bytes(key, data, **condition)
        if key == "champion.json":
            self.accepted.append(json.loads(data)["run_id"])


def evaluated_project(root: Path, answer: int) -> tuple[Path, Path]:
    """A project whose model scores 0.5 on [0, 0, 1, 1], with evaluate's predictions of it
    (so the gate needs no TensorFlow in the racing threads)."""
    from tasks.evaluate import SCORED, scored_record

    project(root, test_labels=[0, 0, 1, 1], answer=answer)
    details = root / "metrics/details/m"
    details.mkdir(parents=True)
    np.save(details / "probs.npy", np.tile(np.eye(3, dtype=np.float32)[answer], (4, 1)))
    labels = open_prepared(root / "data/prepared").labels("test")
    (details / SCORED).write_text(
        json.dumps(scored_record(root / "models/m/model.keras", "test", labels))
    )
    return root, details


def store_factory(kind: str, request, tmp_path: Path, prefix: str):
    """A callable opening a fresh store of `kind`: a folder, or s3://models/<prefix> on moto."""
    if kind == "s3":
        server = request.getfixturevalue("s3_server")
        server.client().create_bucket(Bucket="models")
        return lambda: open_store(
            f"s3://models/{prefix}", endpoint_url=server.endpoint_url, retries=2
        )
    return lambda: open_store(str(tmp_path / "store"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_two_publishers_racing_for_the_champion_cannot_overwrite_each_other(
    tmp_path: Path, kind: str, request
) -> None:
    new_store = store_factory(kind, request, tmp_path, "race")

    barrier, accepted = threading.Barrier(2), []
    runs = {
        run_id: evaluated_project(tmp_path / run_id, answer)
        for run_id, answer in (("run-a", 0), ("run-b", 1))
    }

    def publish_one(run_id: str) -> dict:
        root, details = runs[run_id]
        return publish(
            store=Racer(new_store(), barrier, accepted),
            cfg=CFG,
            run_id=run_id,
            prepared=open_prepared(root / "data/prepared"),
            dataset_version="md5:v1",
            git_commit="abc123",
            params={},
            metrics=None,
            root=root,
            evaluated=details,
        )

    with ThreadPoolExecutor(2) as pool:
        records = dict(zip(runs, pool.map(publish_one, runs), strict=True))

    assert len(accepted) == 1  # exactly one champion write won
    winner = accepted[0]
    loser = next(r for r in runs if r != winner)
    assert records[winner]["status"] == "champion"
    assert records[winner]["reason"] == "no champion yet"
    assert records[loser]["status"] == "challenger"  # re-gated against the winner: a tie
    assert records[loser]["champion_run"] == winner and "does not beat" in records[loser]["reason"]
    store = new_store()
    champion = read(store, "champion.json")
    manifest_bytes = store.get_bytes(champion["manifest"])
    manifest = json.loads(manifest_bytes)
    assert champion["run_id"] == manifest["run_id"] == winner
    assert champion["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    model = next(f for f in manifest["files"] if f["path"] == "models/m/model.keras")
    assert champion["model_sha256"] == model["sha256"]
    for run_id, (root, _) in runs.items():  # both runs are published whole
        for f in read(store, f"runs/{run_id}/manifest.json")["files"]:
            data = store.get_bytes(f"runs/{run_id}/{f['path']}")
            local = (root / f["path"]).read_bytes()
            assert (
                hashlib.sha256(data).hexdigest() == f["sha256"] == hashlib.sha256(local).hexdigest()
            )


def test_a_file_changed_after_hashing_is_caught_by_the_stores_checksum(
    tmp_path: Path, s3_server, caplog
) -> None:
    """S3 checksums what it received (single-part: the sha256; multipart: the sha256 of the
    part sha256s); a store that keeps no checksum falls back to the MD5 ETag, or size only."""
    s3_server.client().create_bucket(Bucket="models")
    store = open_store(
        "s3://models/v",
        endpoint_url=s3_server.endpoint_url,
        retries=2,
        multipart_threshold=5 * MiB,
        multipart_chunk=5 * MiB,
    )
    rng = np.random.default_rng(0)
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(rng.bytes(1000))
    big.write_bytes(rng.bytes(11 * MiB))  # 3 parts

    def changed_after_hashing(path: Path) -> FileHash:
        digest = hash_file(path)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1  # same size, same metadata: only a checksum can tell
        path.write_bytes(bytes(data))
        return digest

    for path in (small, big):
        store.put_file(path.name, path, hash_file(path))  # verified
        with pytest.raises(UserError, match="did not verify .*ChecksumSHA256"):
            store.put_file(path.name, path, changed_after_hashing(path))

    # a store without flexible checksums (HeadObject returns none)
    store.client.meta.events.register(
        "after-call.s3.HeadObject", lambda parsed, **_: parsed.pop("ChecksumSHA256", None)
    )
    store.put_file("small.bin", small, hash_file(small))
    with pytest.raises(UserError, match="did not verify .*ETag"):
        store.put_file("small.bin", small, changed_after_hashing(small))
    store.put_file("big.bin", big, hash_file(big))
    assert "verified by size only" in caplog.text  # multipart ETags are no MD5 of the file


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_conditional_writes_refuse_a_stale_or_existing_object(
    tmp_path: Path, kind: str, request
) -> None:
    store = store_factory(kind, request, tmp_path, "c")()
    store.put_bytes("champion.json", b"first", if_absent=True)
    with pytest.raises(Conflict):
        store.put_bytes("champion.json", b"second", if_absent=True)
    seen = store.get("champion.json")
    assert seen.data == b"first"
    store.put_bytes("champion.json", b"third", if_match=seen.version)
    with pytest.raises(Conflict):  # replaced since `seen` was read
        store.put_bytes("champion.json", b"fourth", if_match=seen.version)
    assert store.get_bytes("champion.json") == b"third"


def test_no_private_boto3_or_s3transfer_api_is_used() -> None:
    private = re.compile(r"^\s*(from|import)\s+(s3transfer|boto3\.s3\.inject)\b|ChunksizeAdjuster")
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in [*(ROOT / "tasks").rglob("*.py"), *(ROOT / "dags").rglob("*.py")]
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert offenders == []


def test_the_airflow_connection_gives_publish_its_aws_env(monkeypatch) -> None:
    from resnet_retrain import workspace

    connection = {
        "conn_type": "aws",
        "login": "AKIDEXAMPLE",
        "password": "not-a-secret",
        "extra": {"endpoint_url": "http://minio:9000", "region_name": "eu-west-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_PIPELINE_S3", json.dumps(connection))
    assert workspace.aws_env("pipeline_s3") == {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "not-a-secret",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    assert workspace.aws_env("no_such_connection") == {}  # the worker's environment is used
    assert workspace.aws_env(None) == {}


def exported_project(root: Path) -> Path:
    """A project whose model (always "zero") is exported as the export stage writes it."""
    from tasks.common import atomic_write_json
    from tasks.export import export_model

    project(root, test_labels=[0, 0, 1], answer=0)
    (root / "exports/m").mkdir(parents=True)
    info = export_model(
        model_file=root / "models/m/model.keras",
        out=root / "exports/m",
        formats=["saved_model", "onnx"],
        images=random_images(4, SIZE, seed=3),
        names=["a", "b", "c", "d"],
        classes=CLASSES,
        atol=1e-4,
        repeats=1,
        batch=4,
    )
    atomic_write_json(root / "exports/m/export.json", info)
    return root


def predict_with_champion(tmp_path: Path, dest: str, endpoint: str | None, fmt: str) -> list[str]:
    """`python -m tasks.predict IMAGE --model champion --format fmt`: the top-1 labels."""
    from PIL import Image

    from tasks.predict import main
    from tests.helpers import params_yaml

    (tmp_path / "params.yaml").write_text(
        params_yaml({"publish": {"destination": dest, "endpoint_url": endpoint}})
    )
    Image.fromarray(random_images(1, SIZE, seed=9)[0]).save(tmp_path / "shot.png")
    out = tmp_path / "p.jsonl"
    args = ["--model", "champion", "--format", fmt, "--out", str(out)]
    args += ["--params", str(tmp_path / "params.yaml"), "--cache-dir", str(tmp_path / "cache")]
    main([str(tmp_path / "shot.png"), *args])
    return [json.loads(line)["label_1"] for line in out.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_exports_are_published_and_the_champion_serves_them_verified(
    tmp_path: Path, kind: str, request
) -> None:
    root = exported_project(tmp_path / "p")
    store = store_factory(kind, request, tmp_path, "exp")()
    cfg = dataclasses.replace(CFG, artifacts=(*CFG.artifacts, "exports"))
    run(root, store, "run-1", cfg=cfg, exports_dir="exports")
    manifest, champion = read(store, "runs/run-1/manifest.json"), read(store, "champion.json")
    local = {p.relative_to(root).as_posix() for p in (root / "exports").rglob("*") if p.is_file()}
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert {"exports/m/model.onnx", "exports/m/saved_model/saved_model.pb"} <= local
    assert {rel: listed.get(rel) for rel in local} == {
        rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in local
    }
    exports = champion["exports"]
    assert manifest["exports"] == exports and set(exports) == {"saved_model", "onnx"}
    assert exports["onnx"]["path"] == "runs/run-1/exports/m/model.onnx"
    assert exports["onnx"]["sha256"] == listed["exports/m/model.onnx"]
    assert (
        exports["saved_model"]["files"]["saved_model.pb"]
        == listed["exports/m/saved_model/saved_model.pb"]
    )

    dest = str(tmp_path / "store") if kind == "folder" else "s3://models/exp"
    endpoint = None if kind == "folder" else request.getfixturevalue("s3_server").endpoint_url
    for fmt in ("onnx", "saved_model"):
        assert predict_with_champion(tmp_path, dest, endpoint, fmt) == ["zero"]
    assert (tmp_path / "cache" / exports["onnx"]["sha256"] / "model.onnx").is_file()

    store.put_bytes("runs/run-1/exports/m/model.onnx", b"a model someone swapped in")
    variables = next(k for k in exports["saved_model"]["files"] if k.startswith("variables/"))
    store.put_bytes(f"runs/run-1/exports/m/saved_model/{variables}", b"changed weights")
    shutil.rmtree(tmp_path / "cache")
    for fmt in ("onnx", "saved_model"):
        with pytest.raises(UserError, match="sha256 does not match champion.json; refusing"):
            predict_with_champion(tmp_path, dest, endpoint, fmt)
    assert not list((tmp_path / "cache").rglob("*.onnx"))
    assert not list((tmp_path / "cache").rglob("saved_model.pb"))


@pytest.mark.slow
def test_exports_of_another_model_file_are_not_published(tmp_path: Path) -> None:
    root = exported_project(tmp_path / "p")
    constant_model(root / "models/m/model.keras", answer=1)  # retrained after the export
    store = open_store(str(tmp_path / "store"))
    cfg = dataclasses.replace(CFG, artifacts=(*CFG.artifacts, "exports"))
    with pytest.raises(UserError, match=r"exports/m was exported from another models/m/model"):
        run(root, store, "run-1", cfg=cfg, exports_dir="exports")
    assert store.get_bytes("champion.json") is None and store.get_bytes("runs/run-1/x") is None
