"""Stage `visualize`: models + samples + metrics/ -> figures/*.png and reports/report.html.

    python -m tasks.visualize [--params params.yaml] [--set visualize.run_id=...]

`figures()` computes every figure (a generator of `Item`s, nothing written); `render()`
saves them one by one, so memory holds a single figure at a time, and records
figures/figures.json (section, file, caption, seconds to build); `tasks.report` then
builds the HTML. Which layers, images and filters are drawn comes from `visualize.*`.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.common import UserError, atomic_dir, atomic_write_json, run_main
from tasks.dataset import Prepared, open_prepared
from tasks.evaluate import confident_errors
from tasks.figures import save
from tasks.layout import COMPARISON, DETAILS, FIGURES, HISTORY, MODEL, PROBS, REPORT_RUN
from tasks.params import EvaluateParams, Params, VisualizeParams, params_from_cli

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
    rows = _read_csv(metrics_dir / COMPARISON)
    if rows:
        from tasks.figures import curves

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
    yield from network_figures(models, cfg=cfg, image=image)


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
    from tasks.figures import curves, errors, gradcam
    from tasks.figures.network import deepest_block

    if not (details / PROBS).is_file():
        raise UserError(
            f"{details}/probs.npy missing: {m.folder} was not evaluated; add it "
            "to evaluate.models and run the evaluate stage"
        )
    probs = np.load(details / PROBS)  # (N, C)
    y_pred = probs.argmax(axis=1)
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
    wrong = confident_errors(labels, probs, cfg.misclassified)
    yield Item(
        m.name,
        f"{m.name}-misclassified",
        "Most confidently wrong test images",
        errors.misclassified_figure(
            np.asarray(images[wrong]),
            labels[wrong],
            y_pred[wrong],
            probs[wrong, y_pred[wrong]],
            classes,
        ),
    )
    pairs = _read_json(details / "pairs.json")[: cfg.pairs_shown]
    yield Item(
        m.name,
        f"{m.name}-pairs",
        "Most confused class pairs, examples of both directions",
        errors.pairs_figure(
            pairs,
            [pair_examples(p, labels, y_pred, probs, images, cfg.pair_examples) for p in pairs],
        ),
    )
    pick = gradcam_picks(labels, probs, cfg.gradcam_images, seed=cfg.seed)
    if len(pick):
        x = np.asarray(images[pick])  # (n, S, S, 3) uint8
        layer = cfg.gradcam_layer
        if layer == "auto":
            layer = deepest_block(m.chain, x[0], min_side=cfg.gradcam_min_side)
        maps, explained = gradcam.gradcam(m.chain, x, layer=layer)
        caps = [
            f"{'ok' if labels[i] == y_pred[i] else 'WRONG'}: {classes[labels[i]]} -> "
            f"{classes[c]} {probs[i, c]:.0%}"
            for i, c in zip(pick, explained, strict=True)
        ]
        yield Item(
            m.name,
            f"{m.name}-gradcam",
            f"Grad-CAM of {layer} for the predicted class, correct and wrong test images",
            gradcam.gradcam_figure(x, maps, caps, title=m.name),
        )


def network_figures(
    models: list[Loaded], *, cfg: VisualizeParams, image: np.ndarray
) -> Iterator[Item]:
    """Activations and filters, every model side by side."""
    from tasks.figures import activations as act
    from tasks.figures import filters

    for layer in cfg.activation_layers:
        maps = {m.name: act.activations(m.chain, image, [layer])[layer] for m in models}
        yield Item(
            "activations",
            f"activations-{layer}",
            f"Feature maps of {layer} for test "
            f"image {cfg.image_index}, same channels in every model",
            act.activations_figure(maps, layer=layer, channels=cfg.activation_channels),
        )
    tiles = {m.name: filters.kernels(m.chain, cfg.first_conv_layer) for m in models}
    yield Item(
        "filters",
        f"kernels-{cfg.first_conv_layer}",
        "First convolution kernels",
        filters.kernels_figure(tiles, layer=cfg.first_conv_layer),
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
            )
            for m in models
        }
        yield Item(
            "filters",
            f"patterns-{layer}",
            f"Inputs that maximally activate filters "
            f"{list(cfg.filter_indices)} of {layer} (gradient ascent, "
            f"{cfg.ascent_steps} steps)",
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


def visualize(*, params: Params) -> Path:
    """Render every figure, then the report; returns the report's path."""
    from tasks import report

    cfg: VisualizeParams = params.visualize
    ev: EvaluateParams = params.evaluate
    prepared = open_prepared(params.data.prepared_dir)
    source = Path(params.backbone.out_dir) / MODEL if cfg.source_model else None
    models = load_models(cfg.models, root=Path(params.train.models_dir), source=source)
    run = report.run_id(params.publish.run_id)
    render(
        figures(
            cfg=cfg, prepared=prepared, split=ev.split, metrics_dir=Path(ev.out_dir), models=models
        ),
        Path(cfg.out_dir),
        dpi=cfg.dpi,
        run={"run_id": run},
    )
    return report.write_report(params=params, run=run)


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def main() -> None:
    params = params_from_cli(__doc__)
    path = visualize(params=params)
    print(f"report    {path.resolve()}")


if __name__ == "__main__":
    run_main(main)
