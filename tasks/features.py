"""Stage `features`: prepared images -> features/<split>.npy, the frozen base's embeddings.

    python -m tasks.features [--params params.yaml]

The backbone runs once per image (resize + preprocess_input + ResNet-50, BatchNorm in
inference mode, exactly the path inside the full model), so feature-extraction heads train
on (N, 2048) float32 arrays in seconds instead of pushing every epoch through ResNet-50.
features.json records the backbone weights' sha256 and the image size; the train stage
refuses a cache made from other weights.

    features/
      <split>.npy     (N, 2048) float32, row i = image i of data/prepared/<split>/
      features.json   backbone sha256, image_size, counts per split
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tasks.common import UserError, atomic_dir, atomic_write_json, file_digest, run_main
from tasks.dataset import SPLITS, Prepared, open_prepared
from tasks.params import params_from_cli

log = logging.getLogger(__name__)

INFO_FILE = "features.json"


def embed(extractor, images: np.ndarray, *, batch_size: int) -> np.ndarray:
    """(N, S, S, 3) uint8 (memmap ok) -> (N, 2048) float32, one batch in memory at a time."""
    from tasks.training import array_dataset

    dummy = np.zeros(len(images), dtype=np.int64)
    ds = array_dataset(images, dummy, num_classes=1, batch_size=batch_size)
    return np.asarray(extractor.predict(ds, verbose=0), dtype=np.float32)


def build_extractor(*, weights: Path, input_size: int, image_size: int):
    """uint8 images -> pooled embeddings, the same layers as inside the full model."""
    import keras

    from tasks.model import ResNetPreprocess, ToFloatImages, build_backbone

    base = build_backbone(weights)
    inputs = keras.Input((input_size, input_size, 3), dtype="uint8", name="image")
    x = ToFloatImages(image_size, name="to_float")(inputs)
    x = ResNetPreprocess(name="preprocess")(x)
    return keras.Model(inputs, base(x, training=False), name="extractor")


def extract(
    *, prepared: Prepared, weights: Path, image_size: int, batch_size: int, out: Path
) -> dict:
    """Write features/<split>.npy for every split; returns the info written."""
    if not weights.is_file():
        raise UserError(
            f"{weights}: backbone weights not found; run the backbone stage "
            "(`dvc repro backbone`) first"
        )
    extractor = build_extractor(
        weights=weights, input_size=prepared.image_size, image_size=image_size
    )
    info = {"backbone_sha256": file_digest(weights), "image_size": image_size, "n": {}}
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            if not (prepared.root / split / "images.npy").is_file():
                continue
            feats = embed(extractor, prepared.images(split), batch_size=batch_size)
            np.save(tmp / f"{split}.npy", feats)
            info["n"][split] = len(feats)
            log.info("%s: %d embeddings of %d", split, *feats.shape)
        atomic_write_json(tmp / INFO_FILE, info)
    return info


def open_features(folder: Path, *, weights: Path, image_size: int) -> dict[str, np.ndarray]:
    """The cached embeddings per split, refused if made from other weights or size."""
    import json

    meta = folder / INFO_FILE
    if not meta.is_file():
        raise UserError(
            f"{folder}: no cached features; run the features stage (`dvc repro features`) first"
        )
    info = json.loads(meta.read_text())
    if info["backbone_sha256"] != file_digest(weights) or info["image_size"] != image_size:
        raise UserError(
            f"{folder} was computed from other backbone weights or image size; "
            "re-run the features stage"
        )
    return {s: np.load(folder / f"{s}.npy", mmap_mode="r") for s in info["n"]}


def main() -> None:
    params = params_from_cli(__doc__)
    from tasks.backbone import backbone_weights_path

    info = extract(
        prepared=open_prepared(params.data.prepared_dir),
        weights=backbone_weights_path(params.backbone),
        image_size=params.train.image_size,
        batch_size=params.train.batch_size,
        out=Path(params.train.features_dir),
    )
    print(
        f"features  {params.train.features_dir}/: "
        + ", ".join(f"{s} {n}x2048" for s, n in info["n"].items())
    )


if __name__ == "__main__":
    run_main(main)
