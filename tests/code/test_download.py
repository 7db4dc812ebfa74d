"""Downloads are verified before use; archives are extracted safely or not at all."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from tasks.common import UserError
from tasks.download import CHUNK, download, safe_extract_tar


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_download_lands_atomically_and_is_reused_from_cache(http_server, tmp_path):
    url, www = http_server
    (www / "a.bin").write_bytes(b"x" * 100_000)
    dest = tmp_path / "cache" / "a.bin"
    download(f"{url}/a.bin", dest, md5=md5(b"x" * 100_000), retries=1)
    assert dest.read_bytes() == b"x" * 100_000
    assert not list(dest.parent.glob("*.part"))
    (www / "a.bin").unlink()  # the server no longer has it: the verified cache is used
    download(f"{url}/a.bin", dest, md5=md5(b"x" * 100_000), retries=1)
    assert dest.exists()


def test_checksum_mismatch_is_rejected_and_nothing_is_kept(http_server, tmp_path):
    url, www = http_server
    (www / "a.bin").write_bytes(b"tampered")
    dest = tmp_path / "a.bin"
    with pytest.raises(UserError, match="checksum mismatch"):
        download(f"{url}/a.bin", dest, md5=md5(b"original"), retries=1)
    assert not dest.exists() and not list(tmp_path.glob("*.part"))


def test_missing_file_fails_at_once_with_the_http_status(http_server, tmp_path):
    url, _ = http_server
    with pytest.raises(UserError, match="404"):
        download(f"{url}/nope.tgz", tmp_path / "nope.tgz", md5=None, retries=5, backoff=30)


def test_unreachable_server_is_retried_then_fails_clearly(tmp_path):
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/a.tgz"  # nothing listens there
    with pytest.raises(UserError, match="after 3 attempts"):
        download(url, tmp_path / "a.tgz", md5=None, retries=3, timeout=2, backoff=0.01)


class FlakyMirror(http.server.BaseHTTPRequestHandler):
    """Serves `server.data`, misbehaving as `server.plan` says, one step per request:
    "503" answers 503, "cut" closes the connection halfway through the body."""

    def do_GET(self) -> None:
        self.server.ranges.append(self.headers.get("Range"))
        step = self.server.plan.pop(0) if self.server.plan else "ok"
        if step == "503":
            self.send_error(503)
            return
        start = int((self.headers.get("Range") or "bytes=0-")[6:].rstrip("-"))
        body = self.server.data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(self.server.data) - 1}/*")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if step == "cut" else body)
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


def test_a_flaky_mirror_is_retried_and_a_cut_body_resumed_with_range(tmp_path):
    data = bytes(range(256)) * (3 << 12)  # 3 MiB, cut at 1.5 MiB
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyMirror)
    server.data, server.plan, server.ranges = data, ["503", "cut"], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/a.bin"
        dest = download(url, tmp_path / "a.bin", md5=md5(data), retries=3, backoff=0.01)
    finally:
        server.shutdown()
        server.server_close()
    assert dest.read_bytes() == data and not list(tmp_path.glob("*.part"))
    # 503 retried by urllib3; the body cut at 1.5 MiB resumes after the whole MiB written
    assert server.ranges == [None, None, f"bytes={CHUNK}-"]


def tar_with(path: Path, members: list[tarfile.TarInfo], payload: bytes = b"data") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for m in members:
            if m.isfile():
                m.size = len(payload)
                tar.addfile(m, io.BytesIO(payload))
            else:
                tar.addfile(m)
    return path


def file_member(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def link_member(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, target
    return m


def device_member(name: str) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type = tarfile.CHRTYPE
    return m


@pytest.mark.parametrize(
    "bad, why",
    [
        (file_member("../escape.txt"), "outside"),
        (file_member("ok/../../escape.txt"), "outside"),
        (file_member("/tmp/abs-escape.txt"), "absolute"),
        (link_member("ok/link", "/etc/passwd"), "link"),
        (link_member("ok/hard", "ok/a.txt", tarfile.LNKTYPE), "link"),
        (device_member("ok/dev"), "device"),
    ],
)
def test_unsafe_members_are_refused_and_nothing_is_extracted(tmp_path, bad, why):
    archive = tar_with(tmp_path / "evil.tgz", [file_member("ok/a.txt"), bad])
    dest = tmp_path / "out" / "inner"
    with pytest.raises(UserError, match=why):
        safe_extract_tar(archive, dest)
    assert not dest.exists()  # checked before the first byte is written
    assert not (tmp_path / "out" / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/abs-escape.txt").exists()


def test_a_safe_archive_extracts_every_file(tmp_path):
    archive = tar_with(tmp_path / "ok.tgz", [file_member("top/a.txt"), file_member("top/b/c.txt")])
    names = safe_extract_tar(archive, tmp_path / "out")
    assert sorted(names) == ["top/a.txt", "top/b/c.txt"]
    assert (tmp_path / "out/top/b/c.txt").read_bytes() == b"data"


def test_a_file_that_is_not_an_archive_is_a_clear_error(tmp_path):
    (tmp_path / "x.tgz").write_text("hello")
    with pytest.raises(UserError, match="not a readable tar"):
        safe_extract_tar(tmp_path / "x.tgz", tmp_path / "out")
