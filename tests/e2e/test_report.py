"""The run report end to end: evaluate + visualize on a tiny dataset with project models,
then report.html opened in headless Chromium: every image loads, no link is broken."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import yaml

from tests.helpers import params_yaml, random_images, write_prepared

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
CLASSES = ["cat", "dog", "truck"]

PARAMS = """
data: {prepared_dir: data/prepared}
evaluate:
  models: [feature_extraction, fine_tune, sweep/*]
  batch_size: 4
publish: {run_id: test-run-1}
visualize:
  models: [feature_extraction, fine_tune]
  dpi: 40
  samples_per_class: 2
  activation_layers: [conv1_relu, conv5_block3_out]
  activation_channels: 3
  filter_layers: [conv2_block1_out]
  filter_indices: [0, 5]
  ascent_steps: 2
  gradcam_images: 4
  misclassified: 4
  pairs_shown: 2
  pair_examples: 2
"""


def tiny_run(root: Path) -> None:
    """A prepared dataset, a source model and two trained-model folders, as stages write them."""
    from tasks.model import build_model

    rng = np.random.default_rng(0)
    splits = {
        s: (random_images(n, 32, seed=i), rng.permutation(np.arange(n) % 3))
        for i, (s, n) in enumerate((("train", 9), ("val", 3), ("test", 12)))
    }
    write_prepared(root / "data/prepared", splits, CLASSES)
    build_model(num_classes=2, input_size=32, image_size=32).save(
        _folder(root / "models/backbone") / "model.keras"
    )
    for name, seconds in (("feature_extraction", 1.0), ("fine_tune", 2.0)):
        folder = _folder(root / "models" / name)
        build_model(num_classes=3, input_size=32, image_size=32).save(folder / "model.keras")
        epochs = [
            {
                "epoch": i,
                "loss": 1.1 - i / 10,
                "accuracy": 0.3 + i / 10,
                "val_loss": 1.2 - i / 10,
                "val_accuracy": 0.3 + i / 20,
                "lr": 1e-3,
                "seconds": seconds,
            }
            for i in range(2)
        ]
        phases = [{"name": "head", "epochs": epochs}]
        if name == "fine_tune":
            phases.append({"name": "fine_tune", "epochs": epochs})
        (folder / "history.json").write_text(json.dumps({"phases": phases}))
        (folder / "train.json").write_text(
            json.dumps(
                {  # as tasks.train writes it
                    "strategy": name,
                    "augment": name == "fine_tune",
                    "val_accuracy": 0.5,
                    "calibration": {"method": "temperature", "temperature": 2.0},
                    "seconds": {p["name"]: 2 * seconds for p in phases},
                    "unfreeze": None
                    if name == "feature_extraction"
                    else {
                        "spec": "conv5",
                        "layers": 33,
                        "weighted_layers": 16,
                        "trainable_params": 14_000_000,
                    },
                }
            )
        )
    _folder(root / "reports/validation")
    (root / "reports/validation/summary.json").write_text(
        json.dumps(
            {
                "passed": True,
                "checks": [  # as tasks.validate writes them
                    {
                        "name": "labels_in_range",
                        "suite": "images",
                        "severity": "error",
                        "success": True,
                        "observed": "0 out of range",
                        "expected": "0",
                    },
                    {
                        "name": "class_balance",
                        "suite": "classes",
                        "severity": "warning",
                        "success": False,
                        "observed": "ratio 0.31",
                        "expected": ">= 0.5",
                    },
                ],
            }
        )
    )
    (root / "params.yaml").write_text(params_yaml(yaml.safe_load(PARAMS)))


def _folder(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def run_stage(module, monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [module.__name__, *args])
    module.main()


@pytest.mark.slow
def test_report_opens_in_chromium_with_every_image_and_link(tmp_path, monkeypatch, capsys):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not installed (Debian package `chromium`; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    from tasks import evaluate, visualize

    tiny_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    run_stage(evaluate, monkeypatch)
    run_stage(visualize, monkeypatch)
    out = capsys.readouterr().out
    report = tmp_path / "reports/report.html"
    assert f"report    {report}" in out and "feature_extraction" in out

    metrics = json.loads((tmp_path / "metrics/metrics.json").read_text())
    assert list(metrics) == ["feature_extraction", "fine_tune"]
    assert metrics["fine_tune"]["n_images"] == 12
    assert metrics["fine_tune"]["seconds_fine_tune"] == 4.0
    assert len((tmp_path / "metrics/confusion/fine_tune.csv").read_text().splitlines()) == 13
    # evaluate applies the temperature train.json records: same labels, other confidence
    ft = metrics["fine_tune"]
    assert ft["temperature"] == 2.0 and ft["ece_calibrated"] != ft["ece"]
    assert ft["loss_calibrated"] != ft["loss"]
    cm = np.load(tmp_path / "metrics/details/fine_tune/confusion.npy")
    assert cm.sum(axis=1).tolist() == [4, 4, 4]  # rows = the test split's class supports
    manifest = json.loads((tmp_path / "figures/figures.json").read_text())
    names = {f["file"] for f in manifest}
    assert {
        "samples.png",
        "preprocessing.png",
        "comparison.png",
        "calibration.png",
        "fine_tune-curves.png",
        "fine_tune-confusion.png",
        "fine_tune-misclassified.png",
        "fine_tune-pairs.png",
        "fine_tune-gradcam.png",
        "activations-conv1_relu.png",
        "kernels-conv1_conv.png",
        "patterns-conv2_block1_out.png",
    } <= names

    shots = Path(os.environ.get("REPORT_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            failed = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            imgs = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])"
            )
            hrefs = page.eval_on_selector_all("a", "els => els.map(e => e.href)")
            ids = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
            text = page.inner_text("body")
            page.screenshot(path=str(shots / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(imgs) == len(manifest)
    assert [i for i in imgs if not (i[1] and i[2] > 0)] == [], "images that did not load"
    assert failed == []
    broken = []
    for href in hrefs:
        url = urlparse(href)
        if url.fragment and url.path == urlparse(report.as_uri()).path:
            if url.fragment not in ids:
                broken.append(href)
        elif url.scheme != "file" or not Path(unquote(url.path)).is_file():
            broken.append(href)
    assert broken == []
    assert any(h.endswith("metrics/metrics.json") for h in hrefs)
    assert any(h.endswith("reports/validation/summary.json") for h in hrefs)
    assert any(h.endswith("models/fine_tune/train.json") for h in hrefs)
    for expected in (
        "Run test-run-1",
        "dataset version",
        "passed",
        "Per class",
        "Most confused class pairs",
        "truck",
        "fine_tune",
    ):
        assert expected in text, expected
    assert (shots / "report.png").stat().st_size > 10_000
    # it leads with the answer: the strategies compared on publish.metric, the gate pending
    answer = text[text.index("Answer") : text.index("created")]
    assert "on accuracy" in answer and "feature extraction" in answer
    assert "Champion gate: not decided yet" in answer
    assert text.index("Answer") < text.index("Metrics") < text.index("Validation")
    # validation as a table, failures first; the raw JSON folded away
    checks = text[text.index("Validation") : text.index("Params")]
    assert checks.index("class_balance") < checks.index("labels_in_range")
    assert "FAIL" in checks and "ratio 0.31" in checks

    # `make run` ends with the metrics per model and the report's path
    from tasks.params import load_params
    from tasks.summary import run_summary

    params = load_params()
    last = run_summary(
        metrics_file=Path(params.evaluate.out_dir) / "metrics.json",
        report=Path(params.visualize.report),
    )
    assert "fine_tune" in last and "feature_extraction" in last and str(report) in last
    assert "answer    " in last and "on accuracy" in last

    # the report is one file: moved elsewhere alone, every image still shows
    alone = tmp_path / "elsewhere/report.html"
    alone.parent.mkdir()
    shutil.copy(report, alone)
    assert "src='figures/" not in alone.read_text() and "data:image/png;base64," in (
        alone.read_text()
    )


def test_report_without_validation_and_dataset_version(tmp_path, monkeypatch):
    from tasks.lineage import dataset_version
    from tasks.params import load_params
    from tasks.report import build_html, collect, stage_outputs

    splits = {"test": (random_images(3, 8), np.array([0, 1, 2]))}
    prepared = write_prepared(tmp_path / "data/prepared", splits, CLASSES)
    (tmp_path / "params.yaml").write_text(params_yaml({"data": {"prepared_dir": "data/prepared"}}))
    monkeypatch.chdir(tmp_path)
    params = load_params()
    ctx = collect(
        stage_outputs(params),
        run_id="r1",
        params=params.to_dict(),
        report=Path("reports/report.html"),
    )
    page = build_html(ctx)
    assert "no validation summary found" in page and "<img" not in page

    # the version follows the data: a changed pixel is a new version; dvc.lock wins if present
    v1 = dataset_version(Path("data/prepared"))
    images = np.load(prepared / "test/images.npy")
    images[0, 0, 0, 0] ^= 1
    np.save(prepared / "test/images.npy", images)
    assert dataset_version(Path("data/prepared")) not in (v1, "")
    Path("dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  prepare:\n    outs:\n"
        "    - path: data/prepared\n      md5: abc123.dir\n"
    )
    assert dataset_version(Path("data/prepared")) == "md5:abc123.dir"


def test_a_report_rebuilt_by_hand_keeps_the_run_id_visualize_gave(tmp_path, monkeypatch, capsys):
    from tasks import report

    splits = {"test": (random_images(3, 8), np.array([0, 1, 2]))}
    write_prepared(tmp_path / "data/prepared", splits, CLASSES)
    (tmp_path / "params.yaml").write_text(params_yaml({"data": {"prepared_dir": "data/prepared"}}))
    _folder(tmp_path / "figures")
    (tmp_path / "figures/run.json").write_text('{"run_id": "20261122T1200Z-abc"}')
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/metrics.json").write_text('{"m<1>": {"accuracy": 0.5, "n_images": 3}}')
    monkeypatch.chdir(tmp_path)
    run_stage(report, monkeypatch)
    assert f"report    {tmp_path / 'reports/report.html'}" in capsys.readouterr().out
    page = (tmp_path / "reports/report.html").read_text()
    assert "<h1>Run 20261122T1200Z-abc</h1>" in page
    # a model name is text, never markup; numbers are shown to 4 decimals
    assert '<h2 id="m-1-">m&lt;1&gt;</h2>' in page
    assert "<td>m&lt;1&gt;</td><td>0.5000</td><td>3</td>" in page
