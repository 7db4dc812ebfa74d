"""Stage `fetch`: source -> data/raw/ (download or copy, verify, extract safely).

    python -m tasks.fetch [--params params.yaml] [--set data.source=cifar10 ...]

The raw folder is replaced only when the fetch completes, and it carries `fetch.json`
with the sha256 of every file, which `prepare` checks before trusting a pickle.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tasks import sources
from tasks.common import atomic_dir, run_main
from tasks.params import DataParams, params_from_cli

log = logging.getLogger(__name__)


def fetch(*, data: DataParams) -> Path:
    """Fetch `data.source` into `data.raw_dir`, atomically; returns the raw folder."""
    raw = Path(data.raw_dir)
    with atomic_dir(raw) as tmp:
        sources.module(data.source).fetch(data, tmp)
    log.info("fetched %s into %s", data.source, raw)
    return raw


def main() -> None:
    params = params_from_cli(__doc__)
    fetch(data=params.data)


if __name__ == "__main__":
    run_main(main)
