"""What `make run` prints at the end: the prepared dataset, metrics per model, the report.

python -m tasks.summary [--params params.yaml]
"""

from __future__ import annotations

from pathlib import Path

from tasks.common import run_main
from tasks.dataset import open_prepared
from tasks.params import params_from_cli
from tasks.prepare import summary
from tasks.report import run_summary
from tasks.validate import verdict


def main() -> None:
    params = params_from_cli(__doc__)
    print(summary(open_prepared(Path(params.data.prepared_dir))))
    # --- validation (tasks/validate.py) ---
    print()
    print(verdict(Path(params.validate.out_dir)))
    # --- evaluation and report (tasks/report.py) ---
    print()
    print(run_summary(params))


if __name__ == "__main__":
    run_main(main)
