"""Download with retries (urllib3's Retry) and resume, verify, and extract archives safely.

A download lands as `<name>.part` and is renamed only once complete and verified, so a
killed fetch never leaves a file the next run trusts.
"""

from __future__ import annotations

import logging
import os
import tarfile
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

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

    urllib3 retries connection errors, timeouts and 5xx/429 answers (`retries` attempts,
    exponential backoff from `backoff` seconds); a 4xx answer fails at once. A body cut
    short is resumed with a Range request where the server allows it, also by the next run
    (the `.part` stays). The md5 is checked before the file is given its final name.
    """
    dest = Path(dest)
    if dest.is_file() and (md5 is None or file_digest(dest, "md5") == md5):
        log.info("using cached %s (%s)", dest, human_bytes(dest.stat().st_size))
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _session(retries=retries, backoff=backoff) as http:
        for _ in range(retries):  # each pass resumes where the previous body stopped
            if _fetch_into(http, url, part, timeout=timeout, retries=retries):
                break
        else:
            raise UserError(
                f"download of {url} failed after {retries} attempts: the connection kept "
                "closing early (check the network or data.url)"
            )
    _check_md5(part, url, md5)
    os.replace(part, dest)
    log.info("downloaded %s (%s)", dest, human_bytes(dest.stat().st_size))
    return dest


def _session(*, retries: int, backoff: float) -> requests.Session:
    retry = Retry(
        total=retries - 1,  # attempts after the first
        backoff_factor=backoff,
        status_forcelist=[429, *range(500, 600)],
        allowed_methods={"GET"},
    )
    http = requests.Session()
    for scheme in ("http://", "https://"):
        http.mount(scheme, HTTPAdapter(max_retries=retry))
    return http


def _fetch_into(
    http: requests.Session, url: str, part: Path, *, timeout: float, retries: int
) -> bool:
    """One GET (retried by urllib3) appended to `part`; False if the body was cut short."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        r = http.get(url, stream=True, timeout=timeout, headers=headers)
    except requests.RequestException as e:
        raise UserError(
            f"download of {url} failed after {retries} attempts: {_reason(e)} "
            "(check the network or data.url)"
        ) from None
    with r:
        if r.status_code == 416:  # asked past the end: the .part is stale, start over
            part.unlink(missing_ok=True)
            return False
        if r.status_code >= 400:
            part.unlink(missing_ok=True)
            raise UserError(
                f"download of {url} failed: HTTP {r.status_code} {r.reason} (check data.url)"
            )
        resumed = r.status_code == 206
        total = int(r.headers.get("Content-Length", 0)) + (have if resumed else 0)
        try:
            _write_body(r, part, resumed=resumed, total=total, have=have)
        except requests.RequestException as e:
            log.warning(
                "download of %s stopped at %d bytes (%s); resuming", url, part.stat().st_size, e
            )
            return False
    return not total or part.stat().st_size == total


def _write_body(r: requests.Response, part: Path, *, resumed: bool, total: int, have: int) -> None:
    with (
        open(part, "ab" if resumed else "wb") as f,
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


def _check_md5(part: Path, url: str, md5: str | None) -> None:
    if md5 is None:
        return
    got = file_digest(part, "md5")
    if got != md5:
        part.unlink(missing_ok=True)
        raise UserError(
            f"checksum mismatch for {url}: md5 {got}, expected {md5}; the file "
            "was deleted (a corrupt or different archive: check data.url/md5)"
        )


def _reason(e: requests.RequestException) -> str:
    """The last underlying error, not urllib3's whole "Max retries exceeded" sentence."""
    inner = e.args[0] if e.args else e
    return str(getattr(inner, "reason", inner))


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
