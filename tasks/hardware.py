"""Where training runs: mixed precision, XLA and multi-GPU, chosen from the visible devices.

`plan()` is pure (device list + params in, choices out) so the choice logic is tested without
a GPU; `detect()` reads the devices and `apply()` sets the Keras global state.

    GPUs  compute capability   auto choice
    0     -                    float32, XLA, default strategy (CPU)
    >=1   >= 8.0 (Ampere+)     mixed_bfloat16 (no loss scaling needed), XLA
    >=1   7.x (Volta/Turing)   mixed_float16 (tensor cores), XLA
    >=1   < 7.0                float32 (no tensor cores: fp16 would be slower), XLA
    >1    -                    tf.distribute.MirroredStrategy across all of them

XLA is on for the CPU too, unlike Keras' own "auto": a ResNet-50 train step at 32 px ran
2.0x faster with it on the 2-core reference machine (1.03 vs 2.07 s per batch of 32,
`python -m benchmarks train`), for about 15 s of compiling per model. Keras itself turns
it off for models holding layers XLA cannot compile (the random augmentation layers).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from tasks.common import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: tuple[int, int] | None  # None when the driver does not say


@dataclass(frozen=True)
class Plan:
    gpus: int
    policy: str  # Keras dtype policy: float32, mixed_float16 or mixed_bfloat16
    xla: bool  # jit_compile for the train step
    mirrored: bool  # MirroredStrategy across `gpus` devices

    def __str__(self) -> str:
        where = f"{self.gpus} GPU(s)" if self.gpus else "CPU"
        return (
            f"{where}, dtype policy {self.policy}, XLA {'on' if self.xla else 'off'}, "
            f"{'MirroredStrategy' if self.mirrored else 'default strategy'}"
        )


def plan(
    gpus: list[Gpu], *, mixed_precision: str = "auto", xla: str = "auto", distribute: str = "auto"
) -> Plan:
    """Choose precision, XLA and distribution for `gpus`; explicit params override `auto`."""
    n = len(gpus)
    if mixed_precision == "auto":
        policy = _auto_policy(gpus)
    elif mixed_precision == "off":
        policy = "float32"
    else:
        if not n:
            raise UserError(
                f"train.mixed_precision = {mixed_precision}: needs a GPU; none is "
                "visible (use auto or off on CPU)"
            )
        policy = mixed_precision
    use_xla = xla in ("auto", "on")
    if distribute == "mirrored" and n < 1:
        raise UserError("train.distribute = mirrored: needs a GPU; none is visible")
    mirrored = n > 1 if distribute == "auto" else distribute == "mirrored"
    return Plan(gpus=n, policy=policy, xla=use_xla, mirrored=mirrored)


def _auto_policy(gpus: list[Gpu]) -> str:
    if not gpus:
        return "float32"
    # the slowest card decides: every replica runs the same step
    caps = [g.compute_capability or (0, 0) for g in gpus]
    lowest = min(caps)
    if lowest >= (8, 0):
        return "mixed_bfloat16"
    if lowest >= (7, 0):
        return "mixed_float16"
    return "float32"


def detect() -> list[Gpu]:
    """The GPUs TensorFlow can see, with their compute capability."""
    import tensorflow as tf

    out = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
        except Exception:  # some drivers give no details; treat the card as unknown
            details = {}
        out.append(
            Gpu(
                name=details.get("device_name", device.name),
                compute_capability=details.get("compute_capability"),
            )
        )
    return out


def apply(p: Plan):
    """Set the Keras dtype policy; return the tf.distribute strategy to build models under."""
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(p.policy)
    if p.gpus:
        for device in tf.config.list_physical_devices("GPU"):
            # share the card politely; RuntimeError: already initialised, too late to matter
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(device, True)
    log.info("hardware: %s", p)
    return tf.distribute.MirroredStrategy() if p.mirrored else tf.distribute.get_strategy()


def setup(*, mixed_precision: str, xla: str, distribute: str):
    """detect + plan + apply: returns (plan, strategy) for the train.* choices given."""
    p = plan(detect(), mixed_precision=mixed_precision, xla=xla, distribute=distribute)
    return p, apply(p)
