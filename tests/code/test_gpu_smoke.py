"""`make gpu-smoke`'s verdict from what each model recorded: the failures it must call out
(no GPU seen, mixed precision fallen back, XLA off, NaN loss) and a clean run passes."""

from __future__ import annotations

from benchmarks._gpu_smoke import problems
from tasks.hardware import Gpu, plan

A100 = plan([Gpu("A100", (8, 0))])  # mixed_bfloat16, XLA


def run(policy="mixed_bfloat16", gpus=1, xla=True, loss=0.5) -> tuple[dict, dict]:
    info = {
        "augment": False,
        "hardware": {"policy": policy, "gpus": gpus, "xla": {"head": False, "fine_tune": xla}},
    }
    history = {
        "phases": [
            {"name": "head", "epochs": [{"epoch": 0, "loss": 1.0}]},
            {"name": "fine_tune", "epochs": [{"epoch": 0, "loss": loss}]},
        ]
    }
    return info, history


def verdict(**kw) -> list[str]:
    info, history = run(**kw)
    return problems({"fine_tune": info}, {"fine_tune": history}, expected=A100, gpus_on_machine=1)


def test_a_clean_gpu_run_passes() -> None:
    assert verdict() == []


def test_each_silent_failure_is_named() -> None:
    assert any("does not see" in p for p in verdict(policy="float32", gpus=0))
    assert any("fell back" in p for p in verdict(policy="float32"))
    assert any("XLA False" in p for p in verdict(xla=False))
    assert any("loss not finite in phase fine_tune" in p for p in verdict(loss=float("nan")))


def test_on_a_cpu_machine_the_cpu_plan_is_expected() -> None:
    info, history = run(policy="float32", gpus=0, xla=True)
    cpu = plan([])
    assert problems({"m": info}, {"m": history}, expected=cpu, gpus_on_machine=0) == []
