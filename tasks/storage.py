"""Object storage behind one small interface: a local folder or an S3-compatible bucket.

    open_store("published")                      -> LocalStore (also "file:///abs/path")
    open_store("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9000")  -> S3Store

Both take keys relative to the destination ("runs/<id>/manifest.json") and give the same
guarantees, so `tasks.publish` has one code path:

- `put_file` verifies what landed: locally the copy's sha256; on S3 the size, the sha256 we
  store in the object's metadata, and the ETag (the MD5, or for multipart uploads the MD5 of
  the part MD5s, recomputed here with the same part size). A store whose ETag is not an MD5
  (SSE-KMS) is verified by downloading the object again.
- `put_bytes` replaces an object atomically: readers see the old or the new one, never half.
- S3 calls that fail for a transient reason (connection refused, timeout, 5xx, throttling)
  are retried with exponential backoff; then one `UserError` names the store and what to
  check. Credentials come only from the environment, an AWS profile or the instance role.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from tasks.common import UserError, atomic_path, file_digest

log = logging.getLogger(__name__)
T = TypeVar("T")
MiB = 1 << 20
SHA256_META = "sha256"  # x-amz-meta-sha256: the file's sha256, set on every upload


class StoreUnavailable(UserError):
    """The store did not answer after every retry: worth retrying later, unlike a UserError."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    sha256: str | None  # None when the object carries no sha256 metadata


@dataclass(frozen=True)
class FileHash:
    sha256: str
    size: int
    etag: str  # the S3 ETag this file gets when uploaded with the given part size


class Store(Protocol):
    uri: str

    def hash(self, path: Path) -> FileHash: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def get_bytes(self, key: str) -> bytes | None: ...
    def get_file(self, key: str, path: Path) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path, digest: FileHash) -> None: ...


def hash_file(path: Path, part_size: int, threshold: int) -> FileHash:
    """sha256, size and expected S3 ETag of a file, in one read."""
    sha, whole, parts = hashlib.sha256(), hashlib.md5(), []
    size = 0
    with open(path, "rb") as f:
        while block := f.read(part_size):
            sha.update(block)
            whole.update(block)
            parts.append(hashlib.md5(block).digest())
            size += len(block)
    if size < threshold:
        etag = whole.hexdigest()
    else:  # multipart: md5 of the concatenated part md5s, then "-<number of parts>"
        etag = f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"
    return FileHash(sha.hexdigest(), size, etag)


def open_store(
    destination: str,
    *,
    endpoint_url: str | None = None,
    profile: str | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30.0,
    multipart_threshold: int = 64 * MiB,
    multipart_chunk: int = 16 * MiB,
) -> Store:
    """The store for `destination`: `s3://bucket[/prefix]`, `file:///path` or a local path."""
    url = urlparse(destination)
    if url.scheme == "s3":
        if not url.netloc:
            raise UserError(
                f"publish.destination = {destination!r}: no bucket; expected s3://bucket/prefix"
            )
        return S3Store(
            url.netloc,
            url.path.strip("/"),
            endpoint_url=endpoint_url,
            profile=profile,
            retries=retries,
            backoff=backoff,
            timeout=timeout,
            multipart_threshold=multipart_threshold,
            multipart_chunk=multipart_chunk,
        )
    if url.scheme == "file":
        return LocalStore(Path(url.path))
    if url.scheme and len(url.scheme) > 1:  # "C:" is a Windows drive, not a scheme
        raise UserError(
            f"publish.destination = {destination!r}: unsupported scheme "
            f"{url.scheme!r}; use a local folder, file:///path or s3://bucket/prefix"
        )
    return LocalStore(Path(destination))


class LocalStore:
    """A folder laid out exactly like the bucket would be."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()
        self.uri = self.root.resolve().as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"key {key!r} escapes the store")
        return path

    def hash(self, path: Path) -> FileHash:
        return hash_file(path, part_size=16 * MiB, threshold=1 << 62)

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return ObjectInfo(path.stat().st_size, file_digest(path))

    def get_bytes(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def get_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def put_bytes(self, key: str, data: bytes) -> None:
        with atomic_path(self._path(key)) as tmp:
            tmp.write_bytes(data)

    def put_file(self, key: str, path: Path, digest: FileHash) -> None:
        with atomic_path(self._path(key)) as tmp:
            shutil.copyfile(path, tmp)
            got = file_digest(tmp)
            if got != digest.sha256:
                raise UserError(
                    f"{self.uri}/{key}: copy does not match its source "
                    f"(sha256 {got[:12]} != {digest.sha256[:12]}); disk full?"
                )


class S3Store:
    """A bucket and prefix on AWS S3 or any S3-compatible store (MinIO, Ceph, moto)."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint_url: str | None,
        profile: str | None,
        retries: int,
        backoff: float,
        timeout: float,
        multipart_threshold: int,
        multipart_chunk: int,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix
        self.uri = f"s3://{bucket}/{prefix}".rstrip("/")
        self.endpoint = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or "AWS"
        )
        self.retries, self.backoff = retries, backoff
        session = boto3.Session(profile_name=profile) if profile else boto3.Session()
        # One attempt per call in botocore: the retry loop below owns attempts and backoff.
        config = Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=timeout,
            read_timeout=timeout,
        )
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunk,
            use_threads=False,
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one S3 operation, retrying transient failures with exponential backoff."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                return fn()
            except (NoCredentialsError, PartialCredentialsError):
                raise UserError(
                    f"{self.uri}: no S3 credentials; set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE / publish.profile "
                    "(in Airflow: the orchestration.aws_conn_id connection)"
                ) from None
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code", ""))
                status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code in ("NoSuchBucket",):
                    raise UserError(
                        f"{self.uri}: bucket {self.bucket!r} does not exist at "
                        f"{self.endpoint}; create it or fix publish.destination"
                    ) from None
                if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                    raise UserError(
                        f"{self.uri}: access denied ({code}) for {what}; check "
                        "the credentials and the bucket policy"
                    ) from None
                if status < 500 and code not in ("SlowDown", "Throttling", "RequestTimeout"):
                    raise
                err: Exception = e
            except (BotoCoreError, S3UploadFailedError, OSError) as e:
                err = e
            if attempt == self.retries:
                raise StoreUnavailable(
                    f"{self.uri}: store unreachable at {self.endpoint} ({what} "
                    f"failed {self.retries} times, last: {type(err).__name__}: "
                    f"{err}); check publish.endpoint_url and the network"
                ) from None
            log.warning(
                "%s: %s failed (%s), retry %d/%d in %.1f s",
                self.uri,
                what,
                type(err).__name__,
                attempt,
                self.retries - 1,
                delay,
            )
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def hash(self, path: Path) -> FileHash:
        """The file's digest, with the ETag boto3's upload of it will produce."""
        from s3transfer.utils import ChunksizeAdjuster

        size = path.stat().st_size
        part = ChunksizeAdjuster().adjust_chunksize(self.transfer.multipart_chunksize, size)
        return hash_file(path, part_size=part, threshold=self.transfer.multipart_threshold)

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        def head() -> dict[str, Any] | None:
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

        meta = self._call(f"HEAD {key}", head)
        if meta is None:
            return None
        return ObjectInfo(int(meta["ContentLength"]), meta.get("Metadata", {}).get(SHA256_META))

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        def get() -> bytes | None:
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                    return None
                raise
            return obj["Body"].read()

        return self._call(f"GET {key}", get)

    def get_file(self, key: str, path: Path) -> None:
        self._call(
            f"GET {key}",
            lambda: self.client.download_file(
                self.bucket, self._key(key), str(path), Config=self.transfer
            ),
        )

    def put_bytes(self, key: str, data: bytes) -> None:
        # One PUT is atomic on S3: a reader gets the previous object or this one.
        self._call(
            f"PUT {key}",
            lambda: self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                Metadata={SHA256_META: hashlib.sha256(data).hexdigest()},
            ),
        )

    def put_file(self, key: str, path: Path, digest: FileHash) -> None:
        self._call(
            f"upload {key}",
            lambda: self.client.upload_file(
                str(path),
                self.bucket,
                self._key(key),
                Config=self.transfer,
                ExtraArgs={"Metadata": {SHA256_META: digest.sha256}},
            ),
        )
        meta = self._call(
            f"HEAD {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        )
        etag = meta.get("ETag", "").strip('"')
        problems = []
        if int(meta["ContentLength"]) != digest.size:
            problems.append(f"size {meta['ContentLength']} != {digest.size}")
        if meta.get("Metadata", {}).get(SHA256_META) != digest.sha256:
            problems.append("sha256 metadata missing or different")
        if _is_md5_etag(etag):
            if etag != digest.etag:
                problems.append(f"ETag {etag} != {digest.etag}")
        elif not problems:  # ETag is not an MD5 (e.g. SSE-KMS): read it back and hash it
            data = self.get_bytes(key) or b""
            if hashlib.sha256(data).hexdigest() != digest.sha256:
                problems.append("content read back differs")
        if problems:
            raise UserError(f"{self.uri}/{key}: upload did not verify ({'; '.join(problems)})")


def _is_md5_etag(etag: str) -> bool:
    head, _, parts = etag.partition("-")
    return (
        len(head) == 32
        and all(c in "0123456789abcdef" for c in head)
        and (not parts or parts.isdigit())
    )
