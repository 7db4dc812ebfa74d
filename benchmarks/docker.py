"""docker/: what the images' build context and entrypoint cost, measured side by side.

1. Build context: what `docker build .` would send with the repo's .dockerignore (an
   allowlist) versus without one, on this checkout as it is (data, .venv, .git included).
2. Entrypoint: writing the container's DVC config (remote, endpoint, cache, no_scm) in one
   file write, as docker/entrypoint.sh does, versus the same settings through five `dvc`
   commands, the obvious alternative. Every container start and every training pod pays it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._util import ROOT, table
from tests.code.test_docker_images import dockerignore_patterns, dockerignored

BIN = Path(sys.executable).parent
SETTINGS = {"DVC_REMOTE_URL": "s3://bench/dvc", "AWS_ENDPOINT_URL": "http://minio:9000"}


def context(ignore: bool) -> tuple[int, int]:
    """(files, bytes) a build of the repo root would send."""
    patterns = dockerignore_patterns() if ignore else []
    files = size = 0
    for dirpath, _dirnames, filenames in os.walk(ROOT):
        rel_dir = Path(dirpath).relative_to(ROOT)
        for name in filenames:
            rel = str(rel_dir / name) if str(rel_dir) != "." else name
            if patterns and dockerignored(rel, patterns):
                continue
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                files += 1
                size += path.stat().st_size
    return files, size


def project(tmp: Path) -> Path:
    (tmp / ".dvc").mkdir(parents=True)
    shutil.copy2(ROOT / ".dvc" / "config", tmp / ".dvc" / "config")
    shutil.copy2(ROOT / "dvc.yaml", tmp / "dvc.yaml")
    return tmp


def time_entrypoint(tmp: Path) -> float:
    env = {
        **os.environ,
        **SETTINGS,
        "PROJECT_DIR": str(tmp),
        "DVC_CACHE_DIR": str(tmp / "c"),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    start = time.perf_counter()
    subprocess.run(
        ["bash", str(ROOT / "docker" / "entrypoint.sh"), "true"],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def time_dvc_commands(tmp: Path) -> float:
    dvc = [str(BIN / "dvc")]
    steps = [
        ["config", "--local", "core.no_scm", "true"],
        ["remote", "add", "--local", "--force", "--default", "store", SETTINGS["DVC_REMOTE_URL"]],
        ["remote", "modify", "--local", "store", "endpointurl", SETTINGS["AWS_ENDPOINT_URL"]],
        ["cache", "dir", "--local", str(tmp / "c")],
        ["config", "--local", "cache.shared", "group"],
    ]
    start = time.perf_counter()
    for step in steps:
        subprocess.run(dvc + step, cwd=tmp, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    rows = []
    with_files, with_bytes = context(ignore=True)
    all_files, all_bytes = context(ignore=False)
    rows.append(
        [
            "build context, .dockerignore",
            f"{with_files} files",
            f"{with_bytes / 2**20:.1f} MiB",
            "1.0x",
        ]
    )
    rows.append(
        [
            "build context, no .dockerignore",
            f"{all_files} files",
            f"{all_bytes / 2**20:.1f} MiB",
            f"{all_bytes / max(with_bytes, 1):.0f}x",
        ]
    )
    entry, commands = [], []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            entry.append(time_entrypoint(project(Path(a) / "p")))
            commands.append(time_dvc_commands(project(Path(b) / "p")))
    e, c = statistics.median(entry), statistics.median(commands)
    rows.append(
        ["DVC setup, entrypoint.sh (one write)", "median of 3", f"{e * 1000:.0f} ms", "1.0x"]
    )
    rows.append(["DVC setup, 5 dvc commands", "median of 3", f"{c * 1000:.0f} ms", f"{c / e:.0f}x"])
    print(table(["what", "n", "cost", "ratio"], rows))


if __name__ == "__main__":
    main()
