"""The GPU / mixed precision / XLA / MirroredStrategy choice (tasks/hardware.py)."""

from __future__ import annotations

import pytest

from tasks.common import UserError
from tasks.hardware import Gpu, plan

A100, V100, K80 = Gpu("A100", (8, 0)), Gpu("V100", (7, 0)), Gpu("K80", (3, 7))


@pytest.mark.parametrize(
    ("gpus", "policy", "xla", "mirrored"),
    [
        ([], "float32", True, False),  # CPU: float32, but XLA (2x on ResNet-50 train steps)
        ([A100], "mixed_bfloat16", True, False),
        ([V100], "mixed_float16", True, False),
        ([K80], "float32", True, False),  # no tensor cores: fp16 would be slower
        ([A100, A100], "mixed_bfloat16", True, True),
        ([A100, V100], "mixed_float16", True, True),  # the slowest card decides
        ([Gpu("?", None)], "float32", True, False),  # unknown capability: play safe
    ],
)
def test_auto_choices_follow_the_devices(gpus, policy, xla, mirrored):
    p = plan(gpus)
    assert (p.policy, p.xla, p.mirrored, p.gpus) == (policy, xla, mirrored, len(gpus))


def test_explicit_params_override_auto():
    p = plan([A100, A100], mixed_precision="off", xla="off", distribute="off")
    assert (p.policy, p.xla, p.mirrored) == ("float32", False, False)
    p = plan([V100], mixed_precision="mixed_bfloat16", distribute="mirrored")
    assert (p.policy, p.mirrored) == ("mixed_bfloat16", True)
    assert plan([], xla="on").xla


def test_gpu_only_choices_fail_clearly_on_cpu():
    with pytest.raises(UserError, match="train.mixed_precision = mixed_float16: needs a GPU"):
        plan([], mixed_precision="mixed_float16")
    with pytest.raises(UserError, match="train.distribute = mirrored: needs a GPU"):
        plan([], distribute="mirrored")
