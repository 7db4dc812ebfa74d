"""Predict class labels for images with the champion, a published run or a local model.

    python -m tasks.predict INPUT... [--model champion|RUN_URI|PATH]
        [--format auto|keras|onnx|tflite|saved_model] [--top-k 3] [--out predictions.csv]

INPUT: image files, folders (searched recursively), globs ("shots/**/*.jpg") or
s3://bucket/prefix (credentials and endpoint as for the folder source: the environment,
data.s3_endpoint_url). Images are decoded as `prepare` decodes them (any mode to RGB, the
`prepare.resize` rule to the model's input side), so served labels match evaluation.

--model: `champion` (the default) reads champion.json at publish.destination (a folder or
s3://), RUN_URI a published run (<destination>/runs/<run_id>, its manifest.json), PATH a
model.keras / model.onnx / model.tflite file, a saved_model/ folder, a model folder or an
exports/<model>/ folder. Downloaded models are checked against the sha256 their pointer
records before they are loaded (a mismatch is refused) and cached by that sha256.

Output: one row per image: path, label_1, prob_1, ... label_k, prob_k; CSV, or JSON Lines
when --out ends in .jsonl. Unreadable files are listed with their reason and skipped; the
exit code is 2 when no image could be predicted.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.common import (
    UserError,
    atomic_dir,
    atomic_path,
    file_digest,
    lines_digest,
    run_main,
    tree_digest,
)
from tasks.images import decode, fit
from tasks.layout import CHAMPION, EXPORT_INFO, MANIFEST, MODEL, TRAIN_INFO
from tasks.params import DEFAULT_PARAMS, load_params
from tasks.runtimes import EXPORT_FORMATS, FILE_OF, FORMATS, load_runtime, predict_batches
from tasks.sources import image_files


@dataclass(frozen=True)
class Resolved:
    format: str
    path: Path  # a local artifact, verified if it was downloaded
    classes: list[str] | None  # None: not recorded with the model (labels become indices)
    temperature: float = 1.0  # a .keras model's calibration (exports have it built in)


# --- inputs ---------------------------------------------------------------------------------


def collect_inputs(inputs: list[str], *, tmp: Path, endpoint_url: str | None) -> list[Path]:
    """Every image file the INPUT arguments name, in order, each once."""
    files: list[Path] = []
    for item in inputs:
        if item.startswith("s3://"):
            found = image_files(download_s3_images(item, tmp / f"s3-{len(files)}", endpoint_url))
        elif Path(item).is_dir():
            found = image_files(Path(item))
        elif Path(item).is_file():
            found = [Path(item)]
        else:
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
        if not found:
            raise UserError(f"{item}: no such image file, no images in that folder or glob")
        files += [f for f in found if f not in files]
    return files


def download_s3_images(uri: str, dest: Path, endpoint_url: str | None) -> Path:
    """Copy s3://bucket/prefix/... to `dest` (the one S3 call site here, via tasks/s3.py)."""
    from tasks import s3

    bucket, prefix = s3.split_uri(uri)
    client = s3.client(endpoint_url=endpoint_url, endpoint_key="data.s3_endpoint_url")
    with s3.errors(
        uri, client, param="INPUT", what="download", endpoint_key="data.s3_endpoint_url"
    ):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :].lstrip("/") or Path(obj["Key"]).name
                if any(part in ("", ".", "..") for part in rel.split("/")):
                    continue  # folder markers; keys that would escape dest
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(target))
    return dest


# --- the model ------------------------------------------------------------------------------


def resolve_local(path: Path, fmt: str) -> Resolved:
    """A model file or folder on this machine -> its format and artifact."""
    if not path.exists():
        raise UserError(f"--model {path}: no such file or folder")
    if path.is_file():
        by_suffix = {".keras": "keras", ".onnx": "onnx", ".tflite": "tflite"}
        found = by_suffix.get(path.suffix)
        if found is None or fmt not in ("auto", found):
            raise UserError(f"--model {path}: not a {fmt if fmt != 'auto' else 'model'} file")
        return Resolved(found, path, None, _temperature_beside(path) if found == "keras" else 1.0)
    if (path / "saved_model.pb").is_file():
        return Resolved("saved_model", path, None)
    info = json.loads((path / EXPORT_INFO).read_text()) if (path / EXPORT_INFO).is_file() else {}
    if fmt == "auto":
        fmt = fastest(info.get("formats", {})) or "keras"
    if fmt == "keras" and not (path / MODEL).is_file() and info.get("model"):
        model = Path(info["model"])
        return Resolved("keras", model, info.get("classes"), _temperature_beside(model))
    artifact = path / FILE_OF[fmt]
    if not artifact.exists():
        raise UserError(f"--model {path}: has no {fmt} model ({FILE_OF[fmt]})")
    temperature = _temperature_beside(artifact) if fmt == "keras" else 1.0
    return Resolved(fmt, artifact, info.get("classes"), temperature)


def _temperature_beside(model_file: Path) -> float:
    """The calibration the train.json next to a .keras file records (1.0 without one)."""
    from tasks.calibration import temperature_of

    info = model_file.parent / TRAIN_INFO
    return temperature_of(json.loads(info.read_text(encoding="utf-8"))) if info.is_file() else 1.0


def fastest(formats: dict) -> str | None:
    """The format with the best recorded throughput (every recorded one passed parity)."""
    ranked = sorted(formats, key=lambda f: formats[f].get("images_per_s", 0), reverse=True)
    return next((f for f in ranked if f in EXPORT_FORMATS and f != "saved_model"), None)


def resolve_pointer(store, pointer: dict, fmt: str, *, where: str, cache: Path) -> Resolved:
    """champion.json (or a run's manifest) -> a verified local copy of the chosen format.

    Pointer keys: `model` + `model_sha256` (the .keras file), `exports` {format: {path,
    sha256, images_per_s, files (a folder's: {relative path: sha256})}}, `classes`.
    """
    exports = pointer.get("exports") or {}
    if fmt == "auto":
        fmt = fastest(exports) or "keras"
    if fmt == "keras":
        key, sha = pointer["model"], pointer.get("model_sha256")
    elif fmt in exports:
        key, sha = exports[fmt]["path"], exports[fmt].get("sha256")
    else:
        raise UserError(f"{where} records no {fmt} export; use --format keras or auto")
    if fmt in exports and "files" in exports[fmt]:
        path = fetch_verified_folder(
            store, key, sha, exports[fmt]["files"], cache=cache, where=where
        )
    else:
        path = fetch_verified(store, key, sha, cache=cache, where=where)
    temperature = float(pointer.get("temperature") or 1.0) if fmt == "keras" else 1.0
    return Resolved(fmt, path, pointer.get("classes"), temperature)


def fetch_verified(store, key: str, sha256: str | None, *, cache: Path, where: str) -> Path:
    """The object `key`, downloaded once into `cache/<sha256>/`, checked before every use."""
    if not sha256:
        raise UserError(f"{where}: no sha256 recorded for {key}; refusing an unverified model")
    target = cache / sha256 / Path(key).name
    if target.is_file() and file_digest(target) == sha256:
        return target
    with atomic_path(target) as tmp:
        download_checked(store, key, tmp, sha256, where=where)
    return target


def download_checked(store, key: str, dest: Path, sha256: str, *, where: str) -> None:
    try:
        store.get_file(key, dest)
    except FileNotFoundError:
        raise UserError(f"{store.uri}/{key}: not found (named by {where})") from None
    if file_digest(dest) != sha256:
        raise UserError(
            f"{store.uri}/{key}: sha256 does not match {where}; refusing to load it "
            "(the published model was changed or damaged)"
        )


def fetch_verified_folder(
    store, key: str, sha256: str | None, files: dict[str, str], *, cache: Path, where: str
) -> Path:
    """The folder `key` (a SavedModel), file by file into `cache/<sha256>/`, each file and
    the whole checked against the pointer before use."""
    if not sha256 or lines_digest(files) != sha256:
        raise UserError(f"{where}: the file list of {key} does not match its sha256; refusing it")
    target = cache / sha256 / Path(key).name
    if target.is_dir() and tree_digest(target) == sha256:
        return target
    with atomic_dir(target) as tmp:
        for rel, file_sha in files.items():
            if any(part in ("", ".", "..") for part in rel.split("/")):
                raise UserError(f"{where}: {key}/{rel} would leave the model folder; refusing it")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            download_checked(store, f"{key}/{rel}", tmp / rel, file_sha, where=where)
    return target


def resolve_model(spec: str, fmt: str, *, params, cache: Path) -> Resolved:
    """--model champion | RUN_URI | PATH -> a local, verified artifact."""
    from tasks.storage import open_store  # boto3 only when a store is used

    if spec == "champion":
        cfg = params.publish
        store = open_store(cfg.destination, endpoint_url=cfg.endpoint_url, profile=cfg.profile)
        raw = store.get_bytes(CHAMPION)
        if raw is None:
            raise UserError(f"{store.uri}: no {CHAMPION} yet; publish a run first")
        return resolve_pointer(store, json.loads(raw), fmt, where=CHAMPION, cache=cache)
    local = Path(spec)
    if spec.startswith(("s3://", "file://")) or (local / MANIFEST).is_file():
        store = open_store(spec, endpoint_url=params.publish.endpoint_url)
        raw = store.get_bytes(MANIFEST)
        if raw is None:
            raise UserError(f"--model {spec}: no {MANIFEST} there; give a published run")
        return resolve_pointer(
            store, run_pointer(json.loads(raw)), fmt, where=MANIFEST, cache=cache
        )
    return resolve_local(local, fmt)


def run_pointer(manifest: dict) -> dict:
    """A run's manifest as a pointer: its model file and that file's recorded sha256."""
    run = f"runs/{manifest['run_id']}/"
    model = manifest["model"].removeprefix(run) + f"/{MODEL}"
    shas = {f["path"]: f["sha256"] for f in manifest.get("files", [])}
    exports = {
        fmt: {**entry, "path": entry["path"].removeprefix(run)}
        for fmt, entry in (manifest.get("exports") or {}).items()
    }
    return {
        "model": model,
        "model_sha256": shas.get(model),
        "classes": manifest.get("classes"),
        "exports": exports,
        "temperature": manifest.get("temperature"),
    }


# --- predicting -----------------------------------------------------------------------------


def predict_files(
    rt, files: list[Path], *, classes: list[str] | None, top_k: int, resize: str, batch_size: int
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """(rows, skipped): top-k labels per readable image; unreadable files with their reason."""
    rows, skipped = [], []
    for start in range(0, len(files), batch_size):
        batch, images = [], []
        for path in files[start : start + batch_size]:
            try:
                images.append(fit(decode(path), rt.input_size, resize))  # (S, S, 3) uint8
                batch.append(path)
            except Exception as e:  # PIL raises many kinds for broken files
                skipped.append((path, f"{type(e).__name__}: {e}"))
        if batch:
            probs = predict_batches(rt, np.stack(images), batch_size)  # (B, C)
            rows += [
                top_labels(str(p), pr, classes, top_k) for p, pr in zip(batch, probs, strict=True)
            ]
        _progress(min(start + batch_size, len(files)), len(files))
    return rows, skipped


def _progress(done: int, total: int) -> None:
    """A one-line progress count on a terminal; nothing in logs or pipes."""
    if sys.stderr.isatty():
        print(f"\r{done}/{total} images", end="\n" if done == total else "", file=sys.stderr)


def top_labels(path: str, probs: np.ndarray, classes: list[str] | None, k: int) -> dict:
    names = (
        classes if classes and len(classes) == len(probs) else [str(i) for i in range(len(probs))]
    )
    row: dict = {"path": path}
    for rank, i in enumerate(np.argsort(-probs, kind="stable")[:k], start=1):
        row[f"label_{rank}"], row[f"prob_{rank}"] = names[i], round(float(probs[i]), 6)
    return row


def write_rows(rows: list[dict], out: Path) -> None:
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        if out.suffix == ".jsonl":
            f.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    cache = Path(args.cache_dir).expanduser()
    with tempfile.TemporaryDirectory() as tmp:
        files = collect_inputs(args.inputs, tmp=Path(tmp), endpoint_url=params.data.s3_endpoint_url)
        model = resolve_model(args.model, args.format, params=params, cache=cache)
        rt = load_runtime(model.format, model.path, temperature=model.temperature)
        classes = model.classes or _prepared_classes(Path(params.data.prepared_dir))
        rows, skipped = predict_files(
            rt,
            files,
            classes=classes,
            top_k=args.top_k,
            resize=params.prepare.resize,
            batch_size=args.batch_size,
        )
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not rows:
        raise UserError(f"none of the {len(files)} input files could be read as an image")
    write_rows(rows, Path(args.out))
    print(f"{len(rows)} images -> {args.out} ({model.format} model {model.path})")


def _prepared_classes(prepared: Path) -> list[str] | None:
    f = prepared / "classes.json"
    return json.loads(f.read_text()) if f.is_file() else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs, s3://")
    p.add_argument("--model", default="champion", help="champion | RUN_URI | PATH")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--out", default="predictions.csv", help="CSV, or JSON Lines if *.jsonl")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--params", default=str(DEFAULT_PARAMS), help="publish.destination etc.")
    p.add_argument(
        "--cache-dir",
        default=os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "resnet-retrain"),
        help="downloaded models, by sha256",
    )
    args = p.parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        raise UserError("--top-k and --batch-size must be >= 1")
    return args


if __name__ == "__main__":
    run_main(main)
