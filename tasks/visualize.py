"""Stage `visualize`: models + samples + metrics/ -> figures/*.png and reports/report.html.

    python -m tasks.visualize [--params params.yaml] [--set publish.run_id=...]

`figures()` computes every figure (a generator of `Item`s, nothing written); `render()`
saves them one by one, so memory holds a single figure at a time, and records
figures/figures.json (section, file, caption, seconds to build) and figures/run.json (the
run id: publish.run_id, else a new one; publish names the run the same); `tasks.report`
then builds the HTML. Which layers, images and filters are drawn comes from `visualize.*`.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from tasks import report
from tasks.common import UserError, atomic_dir, atomic_write_json, run_main
from tasks.dataset import Prepared, open_prepared
from tasks.evaluate import confident_errors
from tasks.figures import save
from tasks.layout import (
    COMPARISON,
    DETAILS,
    FIGURES,
    HISTORY,
    METRICS,
    MODEL,
    PROBS,
    RELIABILITY,
    REPORT_RUN,
    SOURCE_MODEL,
)
from tasks.lineage import git_commit, new_run_id
from tasks.params import VisualizeParams, params_from_cli

log = logging.getLogger(__name__)


@dataclass
class Item:
    section: str  # report section: data, <model name>, comparison, activations, filters
    name: str  # file stem, unique
    caption: str
    fig: object  # matplotlib Figure


@dataclass
class Loaded:
    name: str
    chain: object  # tasks.figures.network.Chain
    folder: Path


def visualize(
    *,
    cfg: VisualizeParams,
    prepared_dir: Path,
    models_dir: Path,
    metrics_dir: Path,
    split: str,
    source_model: Path | None,
    run_id: str,
) -> list[dict]:
    """Every figure into cfg.out_dir, with run.json naming the run; returns figures.json."""
    models = load_models(cfg.models, root=models_dir, source=source_model)
    items = figures(
        cfg=cfg,
        prepared=open_prepared(prepared_dir),
        split=split,
        metrics_dir=metrics_dir,
        models=models,
    )
    return render(items, Path(cfg.out_dir), dpi=cfg.dpi, run={"run_id": run_id})


def load_models(names: tuple[str, ...], *, root: Path, source: Path | None) -> list[Loaded]:
    """The source classifier (if given and present) then every model `names` in `root`,
    each split at its backbone."""
    from tasks.figures.network import split
    from tasks.model import load_model

    out = []
    if source is not None and source.is_file():
        out.append(Loaded("source", split(load_model(source)), source.parent))
    for name in names:
        folder = root / name
        out.append(Loaded(folder.name, split(load_model(folder / MODEL)), folder))
    return out


def figures(
    *, cfg: VisualizeParams, prepared: Prepared, split: str, metrics_dir: Path, models: list[Loaded]
) -> Iterator[Item]:
    """Every figure of the report, in report order."""
    images, labels = prepared.images(split), prepared.labels(split)
    if cfg.image_index >= len(images):
        raise UserError(
            f"visualize.image_index = {cfg.image_index}: the {split} split has {len(images)} images"
        )
    image = np.asarray(images[cfg.image_index])  # (S, S, 3) uint8
    yield from data_figures(
        cfg=cfg,
        prepared=prepared,
        image=image,
        label=int(labels[cfg.image_index]),
        chain=models[-1].chain,
    )
    yield from comparison_figures(metrics_dir / COMPARISON)
    yield from calibration_figures([m.name for m in models if m.name != "source"], metrics_dir)
    for m in models:
        if m.name != "source":  # the source classifier has other classes: no test metrics
            yield from model_figures(
                m,
                cfg=cfg,
                details=metrics_dir / DETAILS / m.name,
                images=images,
                labels=labels,
                classes=prepared.classes,
            )
    yield from activation_figures(models, cfg=cfg, image=image)
    yield from change_figures(models, images=np.asarray(images[: cfg.change_images]))
    yield from filter_figures(models, cfg=cfg, image=image)


def data_figures(
    *, cfg: VisualizeParams, prepared: Prepared, image: np.ndarray, label: int, chain
) -> Iterator[Item]:
    from tasks.figures import data
    from tasks.figures.network import viewable

    yield Item(
        "data",
        "samples",
        f"Random training images per class (seed {cfg.seed})",
        data.samples_figure(
            prepared.images("train"),
            prepared.labels("train"),
            prepared.classes,
            per_class=cfg.samples_per_class,
            seed=cfg.seed,
        ),
    )
    seen = np.asarray(chain.preprocess(image[None]))[0]  # (s, s, 3) BGR - mean
    yield Item(
        "data",
        "preprocessing",
        "What the network sees: the stored image and the "
        "backbone input after resize and mean subtraction",
        data.preprocessing_figure(image, viewable(seen), label=prepared.classes[label]),
    )


def comparison_figures(comparison_csv: Path) -> Iterator[Item]:
    """Accuracy per model and against what was unfrozen (evaluate's comparison.csv)."""
    from tasks.figures import curves

    rows = _read_csv(comparison_csv)
    if not rows:
        return
    for r in rows:
        r["accuracy"] = float(r["accuracy"])
        for key in ("trainable_params", "unfrozen_layers"):  # "" = unknown
            r[key] = int(r[key]) if r.get(key) not in (None, "") else None
    yield Item(
        "comparison",
        "comparison",
        "Test accuracy per model, and against "
        "unfrozen layers and trainable backbone parameters (the unfreezing sweep)",
        curves.comparison_figure(rows),
    )


def calibration_figures(names: list[str], metrics_dir: Path) -> Iterator[Item]:
    """The reliability diagram of every evaluated model (evaluate's reliability.json)."""
    from tasks.figures import calibration

    metrics = _read_json(metrics_dir / METRICS)
    found = {
        n: _read_json(metrics_dir / DETAILS / n / RELIABILITY)
        | {k: metrics.get(n, {}).get(k) for k in ("ece", "ece_calibrated")}
        for n in names
        if (metrics_dir / DETAILS / n / RELIABILITY).is_file()
    }
    if found:
        yield Item(
            "comparison",
            "calibration",
            "Reliability: how often each model is right at the confidence it states, before "
            "and after temperature scaling (T fitted on val; the labels do not change)",
            calibration.reliability_figure(found),
        )


@dataclass
class Scored:
    """One model's predictions on the evaluated split, and what they are of."""

    images: np.ndarray  # (N, S, S, 3) uint8 (memmap)
    labels: np.ndarray  # (N,)
    classes: list[str]
    probs: np.ndarray  # (N, C), evaluate's probs.npy

    def __post_init__(self) -> None:
        self.y_pred = self.probs.argmax(axis=1)  # (N,)


def model_figures(
    m: Loaded,
    *,
    cfg: VisualizeParams,
    details: Path,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
) -> Iterator[Item]:
    """Learning curves, confusion, errors, confused pairs and Grad-CAM of one model."""
    from tasks.figures import curves, errors

    if not (details / PROBS).is_file():
        raise UserError(
            f"{details}/probs.npy missing: {m.folder} was not evaluated; add it "
            "to evaluate.models and run the evaluate stage"
        )
    history = _read_json(m.folder / HISTORY)
    if history:
        yield Item(
            m.name,
            f"{m.name}-curves",
            "Learning curves, both phases on one axis",
            curves.learning_curves_figure(history, title=m.name),
        )
    yield Item(
        m.name,
        f"{m.name}-confusion",
        "Confusion matrix: counts and row-normalised rates",
        errors.confusion_figure(np.load(details / "confusion.npy"), classes, title=m.name),
    )
    scored = Scored(images, labels, classes, probs=np.load(details / PROBS))
    pairs = _read_json(details / "pairs.json")[: cfg.pairs_shown]
    yield from error_figures(m.name, scored, pairs=pairs, cfg=cfg)
    yield from gradcam_figures(m, scored, cfg=cfg)


def error_figures(
    name: str, s: Scored, *, pairs: list[dict], cfg: VisualizeParams
) -> Iterator[Item]:
    """The most confidently wrong images, and examples of the most confused pairs."""
    from tasks.figures import errors

    wrong = confident_errors(s.labels, s.probs, cfg.misclassified)
    yield Item(
        name,
        f"{name}-misclassified",
        "Most confidently wrong test images",
        errors.misclassified_figure(
            np.asarray(s.images[wrong]),
            s.labels[wrong],
            s.y_pred[wrong],
            s.probs[wrong, s.y_pred[wrong]],
            s.classes,
        ),
    )
    examples = [
        pair_examples(p, s.labels, s.y_pred, s.probs, s.images, cfg.pair_examples) for p in pairs
    ]
    yield Item(
        name,
        f"{name}-pairs",
        "Most confused class pairs, examples of both directions",
        errors.pairs_figure(pairs, examples),
    )


def gradcam_figures(m: Loaded, s: Scored, *, cfg: VisualizeParams) -> Iterator[Item]:
    """Grad-CAM of the predicted class on correct and wrong test images (none if no pick)."""
    from tasks.figures import gradcam
    from tasks.figures.network import deepest_block

    pick = gradcam_picks(s.labels, s.probs, cfg.gradcam_images, seed=cfg.seed)
    if not len(pick):
        return
    x = np.asarray(s.images[pick])  # (n, S, S, 3) uint8
    layer = cfg.gradcam_layer
    if layer == "auto":
        layer = deepest_block(m.chain, x[0], min_side=cfg.gradcam_min_side)
    maps, explained = gradcam.gradcam(m.chain, x, layer=layer)
    caps = [
        f"{'ok' if s.labels[i] == s.y_pred[i] else 'WRONG'}: {s.classes[s.labels[i]]} -> "
        f"{s.classes[c]} {s.probs[i, c]:.0%}"
        for i, c in zip(pick, explained, strict=True)
    ]
    yield Item(
        m.name,
        f"{m.name}-gradcam",
        f"Grad-CAM of {layer} for the predicted class, correct and wrong test images",
        gradcam.gradcam_figure(x, maps, caps, title=m.name),
    )


def activation_figures(
    models: list[Loaded], *, cfg: VisualizeParams, image: np.ndarray
) -> Iterator[Item]:
    """Feature maps of each activation layer, every model side by side."""
    from tasks.figures import activations as act

    layers, small = activation_layers(cfg, models[-1].chain, image)
    side = int(models[-1].chain.preprocess(image[None]).shape[1])  # the backbone's input side
    for layer in layers:
        maps = {m.name: act.activations(m.chain, image, [layer])[layer] for m in models}
        diffs = act.changes(maps)  # what each model changed against the one before it
        yield Item(
            "activations",
            f"activations-{layer}",
            f"Feature maps of {layer} for test image {cfg.image_index}, same channels and "
            f"colour scale in every model; {act.change_note(maps, diffs)}{small}",
            act.activations_figure(
                maps, layer=layer, channels=cfg.activation_channels, input_side=side, diffs=diffs
            ),
        )


def change_figures(models: list[Loaded], *, images: np.ndarray) -> Iterator[Item]:
    """How much each stage's weights and representation changed, model to model."""
    from tasks.figures import activations as act
    from tasks.figures import changes

    if len(models) < 2:
        return
    stages = act.stage_outputs(models[-1].chain)
    found = changes.pair_changes({m.name: m.chain for m in models}, images, stages)
    yield Item(
        "activations",
        "changes-per-stage",
        f"What training changed in the backbone, stage by stage, on {len(images)} test images "
        f"(at every input size, also where the maps are too small to draw): "
        f"{changes.change_note(found)}",
        changes.changes_figure(found),
    )


def activation_layers(cfg: VisualizeParams, chain, image: np.ndarray) -> tuple[list[str], str]:
    """The layers to draw, and a caption note naming the stages too small to draw (auto)."""
    from tasks.figures import activations as act

    if cfg.activation_layers != "auto":
        return list(cfg.activation_layers), ""
    wide, small = act.auto_layers(chain, image, min_side=cfg.min_map_side)
    if not wide:
        raise UserError(
            f"visualize.min_map_side = {cfg.min_map_side}: no stage output is that wide at "
            f"this input size ({', '.join(f'{k} {h}x{w}' for k, (h, w) in small.items())})"
        )
    named = ", ".join(f"{k} ({h}x{w})" for k, (h, w) in small.items())
    return list(wide), f"; too small to draw at this input size: {named}" if small else ""


def filter_figures(
    models: list[Loaded], *, cfg: VisualizeParams, image: np.ndarray
) -> Iterator[Item]:
    """First convolution kernels and gradient-ascent patterns, every model side by side."""
    from tasks.figures import filters

    first = cfg.first_conv_layer
    tiles = {m.name: filters.kernels(m.chain, first) for m in models}
    changes = filters.kernel_changes({m.name: m.chain for m in models}, first)
    yield Item(
        "filters",
        f"kernels-{first}",
        f"First convolution kernels, and what training changed (grey = unchanged): "
        f"{filters.kernel_change_note(changes, first)}",
        filters.kernels_figure(tiles, layer=first, changes=changes),
    )
    side = int(models[-1].chain.preprocess(image[None]).shape[1])  # the backbone's input side
    for layer in cfg.filter_layers:
        pats = {
            m.name: filters.preferred_inputs(
                m.chain,
                layer,
                cfg.filter_indices,
                steps=cfg.ascent_steps,
                lr=cfg.ascent_lr,
                size=side,
                seed=cfg.seed,
                jitter=cfg.ascent_jitter,
                decay=cfg.ascent_decay,
            )
            for m in models
        }
        same = [f"{b} = {a}" for a, b in pairwise(pats) if np.array_equal(pats[a], pats[b])]
        yield Item(
            "filters",
            f"patterns-{layer}",
            f"Inputs that maximally activate filters {list(cfg.filter_indices)} of {layer} "
            f"at {side} px (regularised gradient ascent: 1/f spectrum, {cfg.ascent_jitter} px "
            f"jitter, {cfg.ascent_steps} steps)"
            + (
                f"; identical where no layer up to {layer} trained: {', '.join(same)}"
                if same
                else ""
            ),
            filters.preferred_inputs_figure(pats, layer=layer, filters=cfg.filter_indices),
        )


def gradcam_picks(labels: np.ndarray, probs: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Test indices for Grad-CAM: the most confident wrong ones and random correct ones."""
    wrong = confident_errors(labels, probs, n // 2)
    right = np.flatnonzero(probs.argmax(axis=1) == labels)
    rng = np.random.default_rng(seed)
    right = rng.choice(right, min(n - len(wrong), len(right)), replace=False)
    return np.concatenate([np.sort(right), wrong]).astype(int)


def pair_examples(
    pair: dict, labels, y_pred, probs, images, n: int
) -> tuple[list[np.ndarray], list[str]]:
    """Up to `n` images of a confused pair, alternating a-as-b and b-as-a, most confident."""
    a, b = pair["ia"], pair["ib"]
    ways = []
    for t, p in ((a, b), (b, a)):
        idx = np.flatnonzero((labels == t) & (y_pred == p))
        ways.append(list(idx[np.argsort(-probs[idx, p], kind="stable")]))
    order = [i for pair_ in zip(*ways, strict=False) for i in pair_]
    order += [i for w in ways for i in w[len(min(ways, key=len)) :]]
    order = order[:n]
    caps = [
        f"{pair['a'] if labels[i] == a else pair['b']} as "
        f"{pair['b'] if labels[i] == a else pair['a']} {probs[i, y_pred[i]]:.0%}"
        for i in order
    ]
    return [np.asarray(images[i]) for i in order], caps


def render(
    items: Iterator[Item], out_dir: Path, *, dpi: int, run: dict | None = None
) -> list[dict]:
    """Save each figure as it comes (then drop it); returns and writes the manifest."""
    records = []
    with atomic_dir(out_dir) as tmp:
        if run is not None:
            atomic_write_json(tmp / REPORT_RUN, run)
        start = time.perf_counter()
        for item in items:
            built = time.perf_counter()
            save(item.fig, tmp / f"{item.name}.png", dpi=dpi)
            records.append(
                {
                    "section": item.section,
                    "file": f"{item.name}.png",
                    "caption": item.caption,
                    "seconds": round(built - start, 3),
                    "save_seconds": round(time.perf_counter() - built, 3),
                }
            )
            log.info("figure %s (%.1f s)", item.name, time.perf_counter() - start)
            start = time.perf_counter()
        atomic_write_json(tmp / FIGURES, records)
    return records


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def main() -> None:
    params = params_from_cli(__doc__)
    vz = params.visualize
    outs = report.stage_outputs(params)
    run_id = params.publish.run_id or new_run_id(git_commit(None))  # publish reads run.json
    visualize(
        cfg=vz,
        prepared_dir=outs.prepared_dir,
        models_dir=outs.models_dir,
        metrics_dir=outs.metrics_dir,
        split=outs.split,
        source_model=Path(params.backbone.out_dir) / SOURCE_MODEL if vz.source_model else None,
        run_id=run_id,
    )
    path = report.write_report(Path(vz.report), run_id=run_id, outs=outs, params=params.to_dict())
    print(f"report    {path.resolve()}")


if __name__ == "__main__":
    run_main(main)
