"""Small shared helpers: user-facing errors, atomic writes, hashing, the CLI wrapper.

Everything a stage writes goes through `atomic_*` so a killed task never leaves a half file
that the next run (or DVC) would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("tasks")


class UserError(Exception):
    """An error the user can fix (bad params, bad data, missing credentials).

    Printed as one line by `run_main`, no traceback, exit code 2.
    """


def setup_logging(level: str | None = None) -> None:
    level = level or os.environ.get("LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_main(fn: Callable[[], Any]) -> None:
    """Run a stage's `main()`: UserError -> one clear line on stderr and exit 2."""
    setup_logging()
    try:
        fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def file_digest(path: Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def lines_digest(entries: dict[str, str]) -> str:
    """sha256 of a folder given {relative posix path: file sha256}: of its sorted
    "<sha256>  <path>" lines (sorted part by part, as pathlib sorts the paths)."""
    order = sorted(entries, key=lambda rel: rel.split("/"))
    return hashlib.sha256("".join(f"{entries[r]}  {r}\n" for r in order).encode()).hexdigest()


def tree_digest(path: Path) -> str:
    """sha256 of a file, or of a folder (`lines_digest` of every file under it)."""
    if path.is_file():
        return file_digest(path)
    files = (p for p in path.rglob("*") if p.is_file())
    return lines_digest({p.relative_to(path).as_posix(): file_digest(p) for p in files})


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temp path beside `target`; rename it over `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp's 0600 would hide outputs from other users
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(target: Path, obj: Any) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `target`; it replaces `target` only on success.

    The old folder is moved aside first and deleted after the swap, so at every moment
    `target` is either the complete old output or the complete new one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide outputs from other users
    try:
        yield tmp
        old = None
        if target.exists() or target.is_symlink():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
