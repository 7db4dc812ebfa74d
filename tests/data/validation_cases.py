"""Small prepared datasets for the validate stage, and running it as a user does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

from tasks.common import run_main
from tasks.validate import main
from tests.conftest import ROOT
from tests.helpers import params_yaml, random_images, write_prepared

CLASSES = ["cat", "dog", "fox"]
PER_CLASS = {"train": 6, "val": 4, "test": 4}
SIZE = 8


def splits(seed: int = 0, per_class: dict[str, int] = PER_CLASS) -> dict:
    """split -> (images, labels): distinct noise images, every class `per_class[split]` times."""
    out = {}
    for k, (split, n) in enumerate(per_class.items()):
        labels = np.repeat(np.arange(len(CLASSES)), n)
        out[split] = (random_images(len(labels), SIZE, seed=seed * 10 + k), labels)
    return out


def run(
    tmp_path: Path,
    data: dict | Path,
    capsys,
    *,
    quarantined=(),
    suites: Path | None = None,
    args: tuple[str, ...] = (),
    **validate,
) -> tuple[int, str, str, dict]:
    """Write `data` as a prepared dataset (or take one written), run `python -m tasks.validate`
    in-process (plus CLI `args`); returns (exit code, stdout, stderr, summary.json).
    """
    prepared = (
        data
        if isinstance(data, Path)
        else write_prepared(tmp_path / "prepared", data, CLASSES, quarantined=quarantined)
    )
    out = Path(validate.pop("out_dir", tmp_path / "reports"))
    params = {
        "data": {"prepared_dir": str(prepared)},
        "validate": {
            "expectations_dir": str(suites or ROOT / "expectations"),
            "out_dir": str(out),
            "min_per_class": 3,
        }
        | validate,
    }
    (tmp_path / "params.yaml").write_text(params_yaml(params))
    argv, sys.argv = sys.argv, ["validate", "--params", str(tmp_path / "params.yaml"), *args]
    try:
        run_main(main)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text()) if out.exists() else {}
    return code, captured.out, captured.err, summary


def fails(tmp_path, data, capsys, name: str, **kw) -> tuple[str, dict]:
    """Run; assert exit 2 with `name` among the blocking failures and in the message."""
    code, out, err, summary = run(tmp_path, data, capsys, **kw)
    assert code == 2, f"expected the gate to stop the run\n{out}\n{err}"
    assert summary["passed"] is False and name in summary["failed"]
    assert name in err and "validation failed" in err
    assert "Traceback" not in err
    return err, summary
