"""The transfer model every stage shares: uint8 images in, float32 class probabilities out.

    input (B, S, S, 3) uint8                      S = the prepared image size
      -> "to_float"  ToFloatImages: float, resized to image_size      (B, s, s, 3) 0..255 RGB
      -> "augment"   optional Keras random layers, active only in training
      -> "preprocess" ResNetPreprocess: resnet50.preprocess_input     (B, s, s, 3) BGR - mean
      -> "resnet50"  the ResNet-50 base, a nested Model, include_top=False, pooling="avg"
                     called with training=False                       (B, 2048)
      -> "head"      a nested Model: Dense(units...) + Dropout, softmax (float32) (B, classes)

Preprocessing lives inside the model so training, evaluation and serving never disagree.
The custom layers are registered serializable classes (no Lambda), so `load_model` can keep
Keras safe mode on. Every module loads models only through `load_model` here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers, ops

from tasks.common import UserError
from tasks.params import RESNET50_STAGES

BACKBONE_NAME = "resnet50"  # the nested ResNet-50 base inside every saved model
HEAD_NAME = "head"  # the nested classifier head (B, 2048) -> (B, classes)
FEATURES_DIM = 2048  # ResNet-50 pooled embedding width
STAGES = RESNET50_STAGES  # ResNet-50 stage name prefixes: conv1 .. conv5


@keras.saving.register_keras_serializable(package="tasks")
class ToFloatImages(layers.Layer):
    """uint8 (B, H, W, 3) -> float (B, size, size, 3) in 0..255, bilinear resize if needed."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, images):
        x = ops.cast(images, "float32")
        if images.shape[1] != self.size or images.shape[2] != self.size:
            x = ops.image.resize(x, (self.size, self.size), interpolation="bilinear")
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="tasks")
class ResNetPreprocess(layers.Layer):
    """RGB 0..255 -> ResNet-50's caffe-style input (BGR, ImageNet mean subtracted, no 1/255)."""

    def call(self, images):
        return keras.applications.resnet50.preprocess_input(ops.cast(images, self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return input_shape


def build_backbone(weights: str | Path | None = None) -> keras.Model:
    """The ResNet-50 base (B, s, s, 3) -> (B, 2048).

    `weights`: "imagenet" (keras.applications downloads into the Keras cache), None (random)
    or a local weights file of a ResNet-50 base (`.weights.h5`, or the legacy `.h5` Keras
    ships) — anything else is a UserError naming the file.
    """
    if weights == "imagenet":  # the Keras download/cache; unreachable offline
        return keras.applications.ResNet50(
            include_top=False, weights="imagenet", pooling="avg", name=BACKBONE_NAME
        )
    base = keras.applications.ResNet50(
        include_top=False, weights=None, pooling="avg", name=BACKBONE_NAME
    )
    if weights is not None:
        load_backbone_weights(base, Path(weights))
    return base


def load_backbone_weights(base: keras.Model, path: Path) -> None:
    """Load a weights file into `base`, or fail with one clear message."""
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")
    if not str(path).endswith((".weights.h5", ".h5", ".hdf5")):
        raise UserError(f"{path}: not a Keras weights file (expected .weights.h5 or .h5)")
    try:
        with warnings.catch_warnings():  # Keras warns per layer before raising; one error says it
            warnings.simplefilter("ignore")
            base.load_weights(path)
    except Exception as e:  # h5py/Keras raise many kinds for a wrong or broken file
        raise UserError(
            f"{path}: cannot load it as ResNet-50 base weights "
            f"({type(e).__name__}: {_first_line(e)})"
        ) from None


def build_head(
    *,
    num_classes: int,
    units: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.0,
    seed: int | None = None,
) -> keras.Model:
    """The classifier head (B, 2048) -> (B, num_classes) softmax, output kept in float32."""
    inputs = keras.Input((FEATURES_DIM,), name="features")
    x = inputs
    for i, n in enumerate(units):
        if dropout:
            x = layers.Dropout(dropout, seed=seed, name=f"dropout_{i}")(x)
        x = layers.Dense(n, activation=activation, name=f"dense_{i}")(x)
    if dropout:
        x = layers.Dropout(dropout, seed=seed, name="dropout_out")(x)
    # float32 softmax: fp16 probabilities underflow and the loss goes NaN under mixed precision
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(
        x
    )
    return keras.Model(inputs, outputs, name=HEAD_NAME)


def build_model(
    *,
    num_classes: int,
    input_size: int,
    image_size: int,
    backbone: keras.Model | None = None,
    head: keras.Model | None = None,
    units: Sequence[int] = (),
    activation: str = "relu",
    dropout: float = 0.0,
    augment: keras.Layer | None = None,
    seed: int | None = None,
    base_training: bool | None = False,
) -> keras.Model:
    """The full uint8-in model; a new random-weight backbone/head unless one is given.

    `base_training=None` lets BatchNorm follow fit/predict: only for training a base from
    random weights (the source model), where BatchNorm must learn its statistics.
    """
    backbone = backbone if backbone is not None else build_backbone(None)
    head = (
        head
        if head is not None
        else build_head(
            num_classes=num_classes, units=units, activation=activation, dropout=dropout, seed=seed
        )
    )
    inputs = keras.Input((input_size, input_size, 3), dtype="uint8", name="image")
    x = ToFloatImages(image_size, name="to_float")(inputs)  # (B, s, s, 3) 0..255
    if augment is not None:
        x = augment(x)
    x = ResNetPreprocess(name="preprocess")(x)
    # training=False keeps BatchNorm in inference mode, also once layers are unfrozen: the
    # moving statistics would otherwise be wrecked by small fine-tuning batches. For None
    # the kwarg is left out (BatchNorm then follows fit/predict all the same): an explicit
    # training=None made every train step of the source model twice as slow on CPU.
    x = backbone(x) if base_training is None else backbone(x, training=base_training)
    return keras.Model(inputs, head(x), name="transfer")


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested ResNet-50 base of a model built (or loaded) here."""
    return model.get_layer(BACKBONE_NAME)


def head_of(model: keras.Model) -> keras.Model:
    """The nested head (B, 2048) -> (B, classes) of a model built (or loaded) here."""
    return model.get_layer(HEAD_NAME)


def load_model(path: str | Path, *, compile: bool = False) -> keras.Model:
    """Load a `.keras` model in safe mode (no arbitrary code); clear error if it is missing."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: model file not found; run the training stage first")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:  # a truncated or foreign file
        raise UserError(
            f"{path}: cannot load the model ({type(e).__name__}: {_first_line(e)})"
        ) from None


# --- unfreezing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Unfrozen:
    """What `unfreeze` really made trainable (the top 1 and 3 layers hold no weights)."""

    spec: str  # as given: a layer count, a stage name or "all"
    layers: int  # top layers of the base selected by the spec
    weighted_layers: int  # of those, layers with trainable (non-BatchNorm) weights
    trainable_params: int  # parameters of the base that will be trained

    def __str__(self) -> str:
        return (
            f"unfreeze {self.spec}: top {self.layers} layers of {BACKBONE_NAME}, "
            f"{self.weighted_layers} with weights, {self.trainable_params:,} "
            "trainable parameters (BatchNorm stays frozen)"
        )


def select_layers(base: keras.Model, spec: int | str) -> list[keras.Layer]:
    """The top layers of `base` named by `spec`: N layers, a stage and above, or all."""
    body = [layer for layer in base.layers if not isinstance(layer, layers.InputLayer)]
    if spec == "all":
        return body
    if isinstance(spec, int):
        if not 0 <= spec <= len(body):
            raise UserError(
                f"train.unfreeze = {spec}: {BACKBONE_NAME} has {len(body)} layers;"
                f" give 0..{len(body)}, a stage name ({', '.join(STAGES)}) or all"
            )
        return body[len(body) - spec :] if spec else []
    if spec not in STAGES:
        raise UserError(
            f"train.unfreeze = {spec!r}: unknown stage; give a layer count, "
            f"a stage name ({', '.join(STAGES)}) or all"
        )
    first = next(i for i, layer in enumerate(body) if layer.name.startswith(f"{spec}_"))
    return body[first:]  # the stage and everything above it (the pooling layer included)


def unfreeze(base: keras.Model, spec: int | str) -> Unfrozen:
    """Freeze `base`, then make the layers `spec` names trainable, BatchNorm excepted.

    Recompile the model afterwards: `trainable` is read when the train step is compiled.
    """
    base.trainable = True  # a nested model's flag gates its layers' flags
    chosen = select_layers(base, spec)
    ids = {id(layer) for layer in chosen}
    for layer in base.layers:
        layer.trainable = id(layer) in ids and not isinstance(layer, layers.BatchNormalization)
    weighted = sum(1 for layer in chosen if layer.trainable and layer.trainable_weights)
    params = sum(int(ops.size(w)) for w in base.trainable_weights)
    return Unfrozen(
        spec=str(spec), layers=len(chosen), weighted_layers=weighted, trainable_params=params
    )


def freeze(base: keras.Model) -> None:
    base.trainable = False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else "no detail"
