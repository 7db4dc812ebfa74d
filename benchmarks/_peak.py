"""Run a module as `python -m` would and record this process's peak RSS (VmHWM) at exit.

    python -m benchmarks._peak OUT_FILE -m tasks.prepare --params ...

Why not wait4's rusage: Linux carries a child's ru_maxrss over from before its exec, so a
child started by a big parent (one that imported TensorFlow) reports the parent's size.
VmHWM belongs to the process's own address space, which exec starts afresh.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def _record(out: Path) -> None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            out.write_text(line.split()[1])  # KiB


def main() -> None:
    out, flag, module, *rest = sys.argv[1:]
    if flag != "-m":
        raise SystemExit("usage: python -m benchmarks._peak OUT -m MODULE [ARGS...]")
    atexit.register(_record, Path(out))
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
