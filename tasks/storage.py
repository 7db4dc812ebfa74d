"""Object storage behind one small interface: a local folder or an S3-compatible bucket.

    open_store("published")                      -> LocalStore (also "file:///abs/path")
    open_store("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9000")  -> S3Store

Both take keys relative to the destination ("runs/<id>/manifest.json") and give the same
guarantees, so `tasks.publish` has one code path:

- `put_file` verifies what landed: locally the copy's sha256; on S3 the SHA-256 checksum S3
  itself computed on upload (`ChecksumAlgorithm="SHA256"`, read back with HeadObject
  `ChecksumMode=ENABLED`: the file's sha256, or for a multipart upload the sha256 of the
  part digests, "-<parts>"). A store that keeps no flexible checksums gets its size and, for
  a single-part upload, its MD5 ETag checked. Nothing is downloaded again to verify it.
- `put_bytes` replaces an object atomically: readers see the old or the new one, never half.
  With `if_absent` (create only) or `if_match` (replace only the version `get` returned) it
  is a conditional write; `Conflict` says another writer got there first.
- S3 calls retry in botocore's standard mode, errors map to one line (tasks/s3.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from tasks import s3
from tasks.common import UserError, atomic_path, file_digest
from tasks.s3 import StoreUnavailable

__all__ = ["Conflict", "FileHash", "MiB", "Store", "StoreUnavailable", "hash_file", "open_store"]

log = logging.getLogger(__name__)
MiB = 1 << 20
SHA256_META = "sha256"  # x-amz-meta-sha256: the file's sha256, set on every upload


class Conflict(UserError):
    """A conditional write lost: another writer created or changed the object first."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    sha256: str | None  # None when the object carries no sha256 metadata


@dataclass(frozen=True)
class Blob:
    data: bytes
    version: str  # S3: the ETag; local: the sha256. What `put_bytes(if_match=...)` takes


@dataclass(frozen=True)
class FileHash:
    sha256: str
    size: int
    md5: str  # the ETag of a single-part upload on a store without flexible checksums


class Store(Protocol):
    uri: str

    def head(self, key: str) -> ObjectInfo | None: ...
    def get(self, key: str) -> Blob | None: ...
    def get_bytes(self, key: str) -> bytes | None: ...
    def get_file(self, key: str, path: Path) -> None: ...
    def put_bytes(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> None: ...
    def put_file(self, key: str, path: Path, digest: FileHash) -> None: ...


def hash_file(path: Path) -> FileHash:
    """sha256, size and md5 of a file, in one read."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as f:
        while block := f.read(MiB):
            sha.update(block)
            md5.update(block)
            size += len(block)
    return FileHash(sha.hexdigest(), size, md5.hexdigest())


def open_store(
    destination: str,
    *,
    endpoint_url: str | None = None,
    profile: str | None = None,
    retries: int = 5,
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
        from boto3.s3.transfer import TransferConfig

        return S3Store(
            url.netloc,
            url.path.strip("/"),
            client=s3.client(
                endpoint_url=endpoint_url,
                profile=profile,
                attempts=retries,
                timeout=timeout,
                endpoint_key="publish.endpoint_url",
            ),
            transfer=TransferConfig(
                multipart_threshold=multipart_threshold,
                multipart_chunksize=multipart_chunk,
                use_threads=False,
            ),
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

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return ObjectInfo(path.stat().st_size, file_digest(path))

    def get(self, key: str) -> Blob | None:
        path = self._path(key)
        if not path.is_file():
            return None
        data = path.read_bytes()
        return Blob(data, hashlib.sha256(data).hexdigest())

    def get_bytes(self, key: str) -> bytes | None:
        blob = self.get(key)
        return blob.data if blob else None

    def get_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def put_bytes(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> None:
        target = self._path(key)
        if not (if_match or if_absent):
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
            return
        with self._locked(target):  # compare and swap: every conditional writer locks first
            current = self.get(key)
            if (if_absent and current is not None) or (
                if_match and (current is None or current.version != if_match)
            ):
                raise Conflict(f"{self.uri}/{key} was written by another publisher meanwhile")
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)

    @contextlib.contextmanager
    def _locked(self, target: Path) -> Iterator[None]:
        """An exclusive lock beside `target`; the kernel drops it if the process dies."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_name(f".{target.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

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

    def __init__(self, bucket: str, prefix: str, *, client: Any, transfer: Any) -> None:
        self.bucket, self.prefix = bucket, prefix
        self.uri = f"s3://{bucket}/{prefix}".rstrip("/")
        self.client, self.transfer = client, transfer

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _errors(self, what: str):
        return s3.errors(
            self.uri,
            self.client,
            param="publish.destination",
            what=what,
            endpoint_key="publish.endpoint_url",
        )

    def _head(self, key: str, **kwargs: Any) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        with self._errors(f"HEAD {key}"):
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self._key(key), **kwargs)
            except ClientError as e:
                if s3.error_code(e) in s3.NOT_FOUND:
                    return None
                raise

    def head(self, key: str) -> ObjectInfo | None:
        meta = self._head(key)
        if meta is None:
            return None
        return ObjectInfo(int(meta["ContentLength"]), meta.get("Metadata", {}).get(SHA256_META))

    def get(self, key: str) -> Blob | None:
        from botocore.exceptions import ClientError

        with self._errors(f"GET {key}"):
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as e:
                if s3.error_code(e) in s3.NOT_FOUND:
                    return None
                raise
            return Blob(obj["Body"].read(), obj["ETag"])

    def get_bytes(self, key: str) -> bytes | None:
        blob = self.get(key)
        return blob.data if blob else None

    def get_file(self, key: str, path: Path) -> None:
        with self._errors(f"GET {key}"):
            self.client.download_file(self.bucket, self._key(key), str(path), Config=self.transfer)

    def put_bytes(
        self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> None:
        """One PUT is atomic on S3: a reader gets the previous object or this one."""
        from botocore.exceptions import ClientError

        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"} if if_absent else {}
        with self._errors(f"PUT {key}"):
            try:
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=data,
                    ChecksumAlgorithm="SHA256",
                    Metadata={SHA256_META: hashlib.sha256(data).hexdigest()},
                    **condition,
                )
            except ClientError as e:
                code = s3.error_code(e)
                if condition and code in s3.CONFLICT:
                    raise Conflict(
                        f"{self.uri}/{key} was written by another publisher meanwhile ({code})"
                    ) from None
                if not condition or code != "NotImplemented":
                    raise
                log.warning(
                    "%s: no conditional writes here; %s written unconditionally", self.uri, key
                )
                self.put_bytes(key, data)

    def put_file(self, key: str, path: Path, digest: FileHash) -> None:
        with self._errors(f"upload {key}"):
            self.client.upload_file(
                str(path),
                self.bucket,
                self._key(key),
                Config=self.transfer,
                ExtraArgs={"Metadata": {SHA256_META: digest.sha256}, "ChecksumAlgorithm": "SHA256"},
            )
        problems = self._verify(key, path, digest)
        if problems:
            raise UserError(f"{self.uri}/{key}: upload did not verify ({'; '.join(problems)})")

    def _verify(self, key: str, path: Path, digest: FileHash) -> list[str]:
        """What differs between the uploaded object and the file: S3's own checksum of what
        it received, or on a store without flexible checksums its size and MD5 ETag."""
        meta = self._head(key, ChecksumMode="ENABLED") or {}
        problems = []
        if int(meta.get("ContentLength", -1)) != digest.size:
            problems.append(f"size {meta.get('ContentLength')} != {digest.size}")
        if meta.get("Metadata", {}).get(SHA256_META) != digest.sha256:
            problems.append("sha256 metadata missing or different")
        checksum = meta.get("ChecksumSHA256")
        etag = meta.get("ETag", "").strip('"')
        if checksum:
            # multipart ("-<parts>" on the ETag, on the checksum too for AWS): a digest of the
            # part digests, parts of the size this upload used
            expected, sha256 = s3.sha256_checksum(digest.sha256), digest.sha256
            if "-" in etag or "-" in checksum:
                part = self._head(key, PartNumber=1) or {}
                expected, sha256 = s3.multipart_sha256(
                    path, int(part.get("ContentLength", digest.size))
                )
            if checksum.split("-")[0] != expected:
                problems.append(f"ChecksumSHA256 {checksum} != {expected}")
            elif sha256 != digest.sha256:  # S3 holds the file as it is now, not as hashed
                problems.append("ChecksumSHA256 of a file changed since it was hashed")
        elif _is_md5(etag):
            if etag != digest.md5:
                problems.append(f"ETag {etag} != md5 {digest.md5}")
        else:  # multipart or encrypted (SSE-KMS) on a store without checksums
            log.warning("%s/%s: the store keeps no checksum; verified by size only", self.uri, key)
        return problems


def _is_md5(etag: str) -> bool:
    return len(etag) == 32 and all(c in "0123456789abcdef" for c in etag)
