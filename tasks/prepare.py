"""Stage `prepare`: data/raw/ -> data/prepared/ (decode, filter, subsample, split).

    python -m tasks.prepare [--params params.yaml] [--set prepare.exclude=[ship] ...]

Official test sets stay the test set; the validation split is carved from train with the
seed. Unreadable files are skipped and listed in quarantine.csv. Layout: tasks/dataset.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from tasks import sources
from tasks.common import UserError, atomic_dir, atomic_write_json, human_bytes, run_main
from tasks.dataset import (
    CLASSES,
    INDEX,
    INDEX_COLUMNS,
    INFO,
    QUARANTINE,
    QUARANTINE_COLUMNS,
    SPLITS,
    NpyWriter,
    Prepared,
)
from tasks.images import decode, fit
from tasks.paramfile import ParamsError
from tasks.params import DataParams, PrepareParams, params_from_cli
from tasks.sources import FETCH_RECORD, RawDataset, RawSplit

log = logging.getLogger(__name__)

CHUNK = 1024  # images decoded and written per step: bounds memory whatever the dataset size


def prepare(*, data: DataParams, cfg: PrepareParams) -> Prepared:
    """Turn the fetched raw data into uint8 split arrays plus index; returns the result."""
    raw_dir, out = Path(data.raw_dir), Path(data.prepared_dir)
    if not (raw_dir / FETCH_RECORD).is_file():
        raise UserError(f"{raw_dir}: nothing fetched yet; run `python -m tasks.fetch` first")
    fetched = pd.read_json(raw_dir / FETCH_RECORD, typ="series")["source"]
    if fetched != data.source:
        raise UserError(
            f"{raw_dir} holds {fetched!r} but data.source is {data.source!r}; run "
            "the fetch stage again"
        )
    raw = sources.module(data.source).read(raw_dir, data.source)
    if cfg.image_size is None and any(s.images is None for s in raw.splits.values()):
        raise ParamsError(
            "prepare.image_size",
            f"null (native size) needs a source of one "
            f"image size (digits, CIFAR); set a size in px for {data.source}",
        )
    keep = select_classes(raw.classes, include=cfg.include, exclude=cfg.exclude)
    if not any(np.isin(s.labels, keep).any() for s in raw.splits.values()):
        raise UserError(
            f"{raw_dir}: no images of the selected classes were found (check "
            "data.path and prepare.include/exclude)"
        )
    plan = plan_splits(raw, keep=keep, cfg=cfg)
    classes = [raw.classes[c] for c in keep]
    relabel = {old: new for new, old in enumerate(keep)}

    with atomic_dir(out) as tmp:
        rows, bad, shapes = [], [], set()
        for split, (part, idx) in plan.items():
            r, q, shape = write_split(
                tmp / split, split, part, idx, raw=raw, relabel=relabel, classes=classes, cfg=cfg
            )
            rows += r
            bad += q
            shapes.add(shape)
        index = pd.DataFrame(rows, columns=INDEX_COLUMNS + _extra_columns(raw))
        index.to_csv(tmp / INDEX, index=False)
        pd.DataFrame(bad, columns=QUARANTINE_COLUMNS).to_csv(tmp / QUARANTINE, index=False)
        atomic_write_json(tmp / CLASSES, classes)
        counts = {
            s: index[index.split == s]
            .class_name.value_counts()
            .reindex(classes, fill_value=0)
            .astype(int)
            .to_dict()
            for s in plan
        }
        atomic_write_json(
            tmp / INFO,
            {
                "name": raw.name,
                "source": data.source,
                "classes": classes,
                "image_size": max(shapes)[0] if shapes else cfg.image_size,
                "n": {s: int(sum(c.values())) for s, c in counts.items()},
                "counts": counts,
                "quarantined": len(bad),
                "params": {"data": _public(data), "prepare": _public(cfg)},
            },
        )
    if bad:
        log.warning("%d unreadable file(s) skipped; see %s", len(bad), out / QUARANTINE)
    return Prepared(out)


def select_classes(
    classes: list[str], *, include: tuple[str, ...], exclude: tuple[str, ...]
) -> list[int]:
    """Original label ids to keep, in the source's order."""
    for key, names in (("prepare.include", include), ("prepare.exclude", exclude)):
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise ParamsError(
                key, f"{unknown} not in the dataset; its classes are: {', '.join(classes)}"
            )
    keep = [i for i, c in enumerate(classes) if (not include or c in include) and c not in exclude]
    if not keep:
        raise ParamsError("prepare.exclude", "every class was excluded")
    return keep


def plan_splits(
    raw: RawDataset, *, keep: list[int], cfg: PrepareParams
) -> dict[str, tuple[RawSplit, np.ndarray]]:
    """Which rows of which official split go to train/val/test (stratified, seeded)."""
    rng = np.random.default_rng(cfg.seed)
    chosen = {}
    for name, part in raw.splits.items():
        rows = np.flatnonzero(np.isin(part.labels, keep))
        chosen[name] = (part, subsample(part.labels, rows, cfg=cfg, rng=rng))
    if "test" not in chosen:
        part, rows = chosen["train"]
        train, test = carve(part.labels, rows, cfg.test_fraction, rng)
        chosen["train"], chosen["test"] = (part, train), (part, test)
    if "val" not in chosen and cfg.val_fraction > 0:
        part, rows = chosen["train"]
        train, val = carve(part.labels, rows, cfg.val_fraction, rng)
        chosen["train"], chosen["val"] = (part, train), (part, val)
    return {s: chosen[s] for s in SPLITS if s in chosen}


def subsample(
    labels: np.ndarray, rows: np.ndarray, *, cfg: PrepareParams, rng: np.random.Generator
) -> np.ndarray:
    """Keep `fraction` and at most `max_per_class` of each class (random, seeded)."""
    if (cfg.fraction is None and cfg.max_per_class is None) or len(rows) == 0:
        return rows
    out = []
    for c in np.unique(labels[rows]):
        members = rng.permutation(rows[labels[rows] == c])
        n = len(members)
        if cfg.fraction is not None:
            n = max(1, round(n * cfg.fraction))
        if cfg.max_per_class is not None:
            n = min(n, cfg.max_per_class)
        out.append(members[:n])
    return np.sort(np.concatenate(out))


def carve(
    labels: np.ndarray, rows: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split `rows` into (rest, carved) with `fraction` of every class carved out."""
    rest, carved = [rows[:0]], [rows[:0]]
    for c in np.unique(labels[rows]):
        members = rng.permutation(rows[labels[rows] == c])
        k = round(len(members) * fraction)
        if fraction > 0 and len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)  # every class in both parts
        carved.append(members[:k])
        rest.append(members[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(carved))


def write_split(
    folder: Path,
    split: str,
    part: RawSplit,
    rows: np.ndarray,
    *,
    raw: RawDataset,
    relabel: dict[int, int],
    classes: list[str],
    cfg: PrepareParams,
) -> tuple[list[list], list[list], tuple[int, int]]:
    """Decode, fit and write one split; returns (index rows, quarantine rows, (H, W))."""
    folder.mkdir(parents=True)
    size = cfg.image_size or part.images.shape[1]
    labels, index, bad = [], [], []
    workers = cfg.workers or os.cpu_count() or 1
    with (
        ThreadPoolExecutor(workers) as pool,
        NpyWriter(folder / "images.npy", len(rows), (size, size, 3), chunk=CHUNK) as images,
    ):
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            for row, result in zip(chunk, pool.map(lambda r: _load(part, r), chunk), strict=True):
                if isinstance(result, str):
                    bad.append([split, part.sources[row], result])
                    continue
                k = len(labels)
                images.append(fit(result, size, cfg.resize))
                label = relabel[int(part.labels[row])]
                labels.append(label)
                index.append(
                    [
                        split,
                        k,
                        label,
                        classes[label],
                        part.sources[row],
                        hashlib.sha256(np.ascontiguousarray(result)).hexdigest(),
                        *result.shape[:2],
                        *_extra_values(raw, part, row),
                    ]
                )
        images.close()
    np.save(folder / "labels.npy", np.asarray(labels, dtype=np.int64))
    log.info("%s: %d images at %dx%d (%d skipped)", split, len(labels), size, size, len(bad))
    return index, bad, (size, size)


def _load(part: RawSplit, row: int) -> np.ndarray | str:
    """The source image as (h, w, 3) uint8, or the reason it could not be read."""
    if part.images is not None:
        return part.images[row]
    try:
        return decode(part.paths[row])
    except Exception as e:  # any decoder failure quarantines the file, whatever its kind
        return f"{type(e).__name__}: {e}"


def _extra_columns(raw: RawDataset) -> list[str]:
    return [c for key in raw.extra_classes for c in (key, key.replace("_label", "_class"))]


def _extra_values(raw: RawDataset, part: RawSplit, row: int) -> list:
    values = []
    for key, names in raw.extra_classes.items():
        v = int(part.extra[key][row])
        values += [v, names[v]]
    return values


def _public(cfg) -> dict:
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def summary(prepared: Prepared) -> str:
    """The one-screen summary `make run` ends with."""
    info = prepared.info
    classes = info["classes"]
    splits = [s for s in SPLITS if s in info["counts"]]
    width = max(len(c) for c in [*classes, "class", "total"]) + 2
    lines = [
        f"dataset   {info['name']} ({info['source']}), {len(classes)} classes, "
        f"{info['image_size']}x{info['image_size']} RGB uint8",
        "",
        "class".ljust(width) + "".join(s.rjust(8) for s in splits),
    ]
    for c in classes:
        lines.append(c.ljust(width) + "".join(str(info["counts"][s][c]).rjust(8) for s in splits))
    lines.append("total".ljust(width) + "".join(str(info["n"][s]).rjust(8) for s in splits))
    size = sum(f.stat().st_size for f in prepared.root.rglob("*.npy"))
    lines += [
        "",
        f"files     {prepared.root}/ ({human_bytes(size)} of arrays; index.csv, "
        "classes.json, dataset.json)",
        f"skipped   {info['quarantined']} unreadable file(s)"
        + (f", listed in {prepared.root / QUARANTINE}" if info["quarantined"] else ""),
    ]
    return "\n".join(lines)


def main() -> None:
    params = params_from_cli(__doc__)
    prepared = prepare(data=params.data, cfg=params.prepare)
    print(summary(prepared))


if __name__ == "__main__":
    run_main(main)
