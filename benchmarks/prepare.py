"""Preparing a CIFAR-10-sized dataset: 60,000 32x32 images (184 MB as uint8).

The archive is built in the official layout (5 x 10,000 training images + 10,000 test
images, pickled batches) and served by a loopback HTTP server, so fetch and prepare run
their real code paths. Target: prepare peaks below 1 GiB RSS.
"""

from __future__ import annotations

import functools
import http.server
import tempfile
import threading
from pathlib import Path

from benchmarks._util import run_measured, table
from tasks.common import file_digest

LIMIT_MIB = 1024


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def main() -> None:
    from tests.helpers import cifar_archive, params_yaml

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        www = tmp / "www"
        www.mkdir()
        archive = cifar_archive(www / "cifar-10-python.tar.gz", per_batch=10_000, n_test=10_000)
        handler = functools.partial(_Quiet, directory=str(www))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        rows = []
        try:
            for size in (None, 64):
                params = tmp / f"params-{size}.yaml"
                params.write_text(
                    params_yaml(
                        {
                            "data": {
                                "source": "cifar10",
                                "url": url,
                                "md5": file_digest(archive, "md5"),
                                "cache_dir": str(tmp / "dl"),
                                "raw_dir": str(tmp / "raw"),
                                "prepared_dir": str(tmp / f"prepared-{size}"),
                            },
                            "prepare": {"image_size": size},
                        }
                    )
                )
                if size is None:
                    wall, rss = run_measured(["-m", "tasks.fetch", "--params", str(params)])
                    rows.append(
                        [
                            "fetch (download + md5 + extract)",
                            "60,000",
                            "32",
                            f"{wall:.1f}",
                            f"{rss:.0f}",
                            "-",
                            "-",
                        ]
                    )
                wall, rss = run_measured(["-m", "tasks.prepare", "--params", str(params)])
                rows.append(
                    [
                        f"prepare (image_size={size or 'native'})",
                        "60,000",
                        str(size or 32),
                        f"{wall:.1f}",
                        f"{rss:.0f}",
                        str(LIMIT_MIB),
                        "yes" if rss < LIMIT_MIB else "NO",
                    ]
                )
        finally:
            server.shutdown()
    print(table(["step", "images", "px", "seconds", "peak RSS MiB", "limit MiB", "within"], rows))


if __name__ == "__main__":
    main()
