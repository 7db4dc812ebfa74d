"""Download with retries and resume, verify, and extract archives safely.

A download lands as `<name>.part` and is renamed only once complete and verified, so a
killed fetch never leaves a file the next run trusts.
"""

from __future__ import annotations

import logging
import os
import tarfile
import time
from pathlib import Path

import requests
from tqdm import tqdm

from tasks.common import UserError, file_digest, human_bytes

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # 1 MiB per read: few syscalls, small memory


def download(
    url: str,
    dest: Path,
    *,
    md5: str | None,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> Path:
    """Fetch `url` to `dest` unless a verified copy is already there.

    Retries connection errors, timeouts and 5xx/429 answers with exponential backoff,
    resuming with a Range request where the server allows it. A 4xx answer fails at once.
    The md5 is checked before the file is given its final name.
    """
    dest = Path(dest)
    if dest.is_file() and (md5 is None or file_digest(dest, "md5") == md5):
        log.info("using cached %s (%s)", dest, human_bytes(dest.stat().st_size))
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            _fetch_into(url, part, timeout=timeout)
            break
        except _Permanent as e:
            part.unlink(missing_ok=True)
            raise UserError(f"download of {url} failed: {e} (check data.url)") from None
        except (requests.RequestException, OSError) as e:
            if attempt == retries:
                raise UserError(
                    f"download of {url} failed after {retries} attempts: {e} "
                    "(check the network or data.url)"
                ) from None
            wait = backoff * 2 ** (attempt - 1)
            log.warning(
                "download attempt %d/%d failed (%s); retrying in %.1fs", attempt, retries, e, wait
            )
            time.sleep(wait)
    if md5 is not None:
        got = file_digest(part, "md5")
        if got != md5:
            part.unlink(missing_ok=True)
            raise UserError(
                f"checksum mismatch for {url}: md5 {got}, expected {md5}; the file "
                "was deleted (a corrupt or different archive: check data.url/md5)"
            )
    os.replace(part, dest)
    log.info("downloaded %s (%s)", dest, human_bytes(dest.stat().st_size))
    return dest


class _Permanent(Exception):
    """An answer that a retry will not change (404, 403, ...)."""


def _fetch_into(url: str, part: Path, *, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
        if r.status_code == 416:  # asked past the end: the .part is stale, start over
            part.unlink(missing_ok=True)
            raise requests.ConnectionError("stale partial download, restarting")
        if 400 <= r.status_code < 500 and r.status_code != 429:
            raise _Permanent(f"HTTP {r.status_code} {r.reason}")
        r.raise_for_status()
        resumed = r.status_code == 206
        mode = "ab" if resumed else "wb"
        total = int(r.headers.get("Content-Length", 0)) + (have if resumed else 0)
        with (
            open(part, mode) as f,
            tqdm(
                total=total or None,
                initial=have if resumed else 0,
                unit="B",
                unit_scale=True,
                desc=part.name[:-5],
                disable=None,
                leave=False,
            ) as bar,
        ):
            for block in r.iter_content(CHUNK):
                f.write(block)
                bar.update(len(block))
        if total and part.stat().st_size != total:
            raise requests.ConnectionError(
                f"connection closed after {part.stat().st_size} of {total} bytes"
            )


def safe_extract_tar(archive: Path, dest: Path) -> list[str]:
    """Extract a tar(.gz) into `dest`, refusing anything that could write outside it.

    Every member is checked before the first byte is written: absolute paths, `..`
    components, symbolic and hard links, devices and FIFOs are refused. Returns the names
    of the regular files extracted.
    """
    dest = Path(dest).resolve()
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115  (closed by `with tar` below)
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"{archive}: not a readable tar archive ({e})") from None
    with tar:
        members = tar.getmembers()
        for m in members:
            _check_member(m, dest, archive)
        dest.mkdir(parents=True, exist_ok=True)
        # The 'data' filter re-checks the same things; belt and braces.
        tar.extractall(dest, members=members, filter="data")
    return [m.name for m in members if m.isfile()]


def _check_member(m: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    def refuse(why: str) -> None:
        raise UserError(
            f"{archive}: refusing to extract {m.name!r}: {why}; nothing was "
            "extracted (the archive is unsafe or not the official one)"
        )

    if m.issym() or m.islnk():
        refuse(f"it is a link to {m.linkname!r}")
    if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
        refuse("it is a device or FIFO")
    if not (m.isfile() or m.isdir()):
        refuse("it is not a regular file or folder")
    name = m.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        refuse("absolute path")
    target = (dest / name).resolve()
    if target != dest and dest not in target.parents:
        refuse("it would land outside the target folder")
