"""`make bench`: run every benchmark module (or the ones named) and print their tables.

python -m benchmarks [prepare validate train figures dag ...]
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(names: list[str]) -> int:
    found = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_")
    )
    unknown = sorted(set(names) - set(found))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {', '.join(found)}", file=sys.stderr)
        return 2
    failed = []
    for name in names or found:
        print(f"\n== benchmarks.{name} ==", flush=True)
        start = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{name}").main()
        except Exception as e:  # one broken benchmark must not hide the others' tables
            failed.append(name)
            print(f"benchmarks.{name} failed: {type(e).__name__}: {e}")
        print(f"({time.perf_counter() - start:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
