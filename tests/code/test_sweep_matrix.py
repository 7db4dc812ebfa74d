"""The sweep's matrix comes from params.yaml (train.sweep.unfreeze x train.sweep.augment), as
DVC itself resolves it, and each item trains into the folder train.py names it."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tasks.params import section
from tasks.train import runs_for

ROOT = Path(__file__).resolve().parents[2]


def sweep_stages(tmp_path: Path, unfreeze: list, augment: list[bool]) -> dict[str, list[str]]:
    """{stage name: outs} of the sweep items DVC generates for these values."""
    from dvc.repo import Repo

    Repo.init(tmp_path, no_scm=True)
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["sweep"] = {"unfreeze": unfreeze, "augment": augment}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with Repo(tmp_path) as repo:
        return {
            s.name: [str(o.def_path) for o in s.outs]
            for s in repo.index.stages
            if s.name.startswith("sweep@")
        }


def test_sweep_items_follow_both_params_and_match_train_py_folders(tmp_path: Path) -> None:
    stages = sweep_stages(tmp_path, unfreeze=[1, "conv5"], augment=[False])
    assert sorted(stages) == ["sweep@1-False", "sweep@conv5-False"]  # no augmented items
    outs = sorted(o for v in stages.values() for o in v)
    train = section("train", strategy="sweep", sweep={"unfreeze": [1, "conv5"], "augment": [False]})
    expected = sorted(str(r.out) for r in runs_for(train))
    assert (
        outs
        == expected
        == ["models/sweep/unfreeze-1-aug-false", "models/sweep/unfreeze-conv5-aug-false"]
    )
