"""Look inside a saved model of the contract (tasks/model.py) without rebuilding it.

A model is a chain: uint8 (B, S, S, 3) -> resize -> preprocess -> backbone (a nested keras
Model named `tasks.model.BACKBONE_NAME`) -> head -> softmax. Figures need the tensors in
between (what the backbone sees, a named conv layer's output), so the chain is split into
the layers before the backbone, the backbone, and the layers after it, and run piece by piece.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from tasks.common import UserError
from tasks.model import BACKBONE_NAME


@dataclass(frozen=True)
class Chain:
    """A contract model split at its backbone; `before` and `after` run in order."""

    model: keras.Model
    before: tuple[Any, ...]  # input -> (B, s, s, 3) float32, preprocessed (caffe BGR)
    backbone: keras.Model
    after: tuple[Any, ...]  # backbone features -> (B, C) probabilities

    def preprocess(self, images: np.ndarray | Any) -> Any:
        """(B, S, S, 3) uint8 -> the backbone's input tensor (B, s, s, 3) float32."""
        x = images
        for layer in self.before:
            x = layer(x, training=False)
        return x

    def head(self, features: Any) -> Any:
        """Backbone output -> (B, C) probabilities."""
        x = features
        for layer in self.after:
            x = layer(x, training=False)
        return x

    def layer(self, name: str) -> keras.layers.Layer:
        """A layer of the backbone (or, failing that, of the outer model) by name."""
        for owner in (self.backbone, self.model):
            try:
                return owner.get_layer(name)
            except ValueError:
                continue
        raise UserError(
            f"layer {name!r} not found in the backbone "
            f"{self.backbone.name!r}; some of its layers: "
            f"{', '.join(conv_layer_names(self.backbone)[-6:])}"
        )

    def taps(self, names: list[str] | tuple[str, ...], *, features: bool = False) -> keras.Model:
        """A model from the backbone's input to the named layers' outputs (+ its own)."""
        outs = [self.layer(n).output for n in names]
        if features:
            outs.append(self.backbone.output)
        return keras.Model(self.backbone.input, outs if len(outs) > 1 else outs[0])


def split(model: keras.Model, name: str | None = None) -> Chain:
    """Split `model` at its nested backbone; a clear error if it is not a plain chain."""
    name = name or BACKBONE_NAME
    layers = _chain_layers(model)
    found = [i for i, x in enumerate(layers) if x.name == name]
    if not found or not isinstance(layers[found[0]], keras.Model):
        raise UserError(
            f"model {model.name!r} has no nested backbone named {name!r}; its "
            f"layers: {', '.join(x.name for x in layers)}"
        )
    i = found[0]
    after = [
        y
        for x in layers[i + 1 :]
        for y in (  # a nested head runs layer by layer, so
            _chain_layers(x) if isinstance(x, keras.Model) else [x]
        )
    ]  # its logits are reachable
    return Chain(model, tuple(layers[:i]), layers[i], tuple(after))


def _chain_layers(model: keras.Model) -> list:
    """The model's layers in data-flow order; a clear error unless they form one chain."""
    layers = [x for x in model.layers if not isinstance(x, keras.layers.InputLayer)]
    for layer in layers:  # one call with one input each = a chain, so order is data flow
        nodes = layer._inbound_nodes
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
            raise UserError(
                f"model {model.name!r}: layer {layer.name!r} is not part of a "
                "single chain (shared or multi-input); figures need the "
                "contract's input -> preprocess -> backbone -> head chain"
            )
    return layers


def conv_layer_names(model: keras.Model) -> list[str]:
    """Names of layers with a 4-D output, in order (what activations can show)."""
    out = []
    for layer in model.layers:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            out.append(layer.name)
    return out


def viewable(x: np.ndarray) -> np.ndarray:
    """A caffe-preprocessed (H, W, 3) BGR float image -> RGB in [0, 1], min-max stretched.

    Mean subtraction leaves values around -124..151; shown raw they would be clipped, so
    the image is stretched per channel-set to its own range (what the network sees, up to
    brightness and contrast).
    """
    rgb = np.asarray(x, dtype=np.float32)[..., ::-1]
    lo, hi = float(rgb.min()), float(rgb.max())
    return (rgb - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb)


def deepest_block(chain: Chain, image: np.ndarray, *, min_side: int) -> str:
    """The deepest block output (`*_out`, else any 4-D layer) still `min_side` px wide for
    this image: Grad-CAM's layer when `visualize.gradcam_layer` is auto. At 32 px input
    ResNet-50's conv5 is 1x1, a map with nothing to show."""
    names = conv_layer_names(chain.backbone)
    names = [n for n in names if n.endswith("_out")] or names
    outs = chain.taps(names)(chain.preprocess(np.asarray(image)[None]), training=False)
    outs = outs if isinstance(outs, list | tuple) else [outs]
    wide = [n for n, o in zip(names, outs, strict=True) if o.shape[1] >= min_side]
    return wide[-1] if wide else names[0]
