"""One S3 client and one error mapping for every stage that touches S3 (publish, the folder
source, backbone weights).

    s3 = client(endpoint_url=..., profile=..., attempts=5, timeout=30.0)
    with errors("s3://bucket/prefix", s3, param="publish.destination", what="GET champion.json"):
        s3.get_object(...)

Retries are botocore's "standard" mode (exponential backoff with jitter on connection
errors, timeouts, 5xx and throttling); nothing here loops. Once botocore gives up, `errors`
turns the failure into one line: a `UserError` for what the user must fix (credentials, a
missing bucket, access denied, a bad endpoint URL) or `StoreUnavailable` ("store
unreachable": try again later; publish exits 75 on it). Credentials come only from the
environment, an AWS profile or the instance role.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.common import UserError

NOT_FOUND = ("404", "NoSuchKey", "NotFound")
DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "ExpiredToken")
THROTTLED = ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout")
# another writer got there first (412), or is writing right now (409), or deleted it (404)
CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict", *NOT_FOUND)


class StoreUnavailable(UserError):
    """The store did not answer after every retry: worth retrying later, unlike a UserError."""


def client(
    *,
    endpoint_url: str | None = None,
    profile: str | None = None,
    attempts: int = 5,
    timeout: float = 30.0,
    endpoint_key: str = "the endpoint URL",
) -> Any:
    """A boto3 S3 client; `attempts` counts the first try (botocore's total_max_attempts)."""
    import boto3
    import botocore.exceptions as bx
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=timeout,
        read_timeout=timeout,
    )
    try:
        session = boto3.Session(profile_name=profile) if profile else boto3.Session()
        return session.client("s3", endpoint_url=endpoint_url, config=config)
    except bx.ProfileNotFound:
        raise UserError(f"AWS profile {profile!r} not found; fix the profile or unset it") from None
    except ValueError as e:  # botocore: "Invalid endpoint: ..."
        raise UserError(
            f"{endpoint_key} = {endpoint_url or os.environ.get('AWS_ENDPOINT_URL')!r}: {e}; "
            "give a URL such as http://localhost:9000"
        ) from None


def error_code(e: Exception) -> str:
    """The S3 error code of a botocore ClientError ("NoSuchKey", "412", ...)."""
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def errors(uri: str, s3: Any, *, param: str, what: str, endpoint_key: str) -> Iterator[None]:
    """Map what botocore raises inside the block to one clear error naming `uri`.

    `param` is the param that names `uri`, `endpoint_key` the one that sets the endpoint.
    """
    import botocore.exceptions as bx
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError

    transient = (bx.ConnectionError, bx.HTTPClientError, bx.ResponseStreamingError)
    try:
        yield
    except (bx.NoCredentialsError, bx.PartialCredentialsError):
        raise UserError(
            f"{uri}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "AWS_PROFILE (in Airflow: the orchestration.aws_conn_id connection)"
        ) from None
    except S3UploadFailedError as e:  # boto3 wraps an upload's ClientError, keeping it as context
        cause = e.__context__
        if isinstance(cause, bx.ClientError):
            raise _client_error(
                cause, uri, s3, param=param, what=what, endpoint_key=endpoint_key
            ) from None
        raise _unreachable(e, uri, s3, what=what, endpoint_key=endpoint_key) from None
    except bx.ClientError as e:
        raise _client_error(e, uri, s3, param=param, what=what, endpoint_key=endpoint_key) from None
    except (*transient, RetriesExceededError) as e:
        raise _unreachable(e, uri, s3, what=what, endpoint_key=endpoint_key) from None


def _client_error(e, uri: str, s3: Any, *, param: str, what: str, endpoint_key: str) -> UserError:
    code = error_code(e)
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code == "NoSuchBucket":
        bucket = uri.removeprefix("s3://").split("/", 1)[0]
        return UserError(
            f"{uri}: bucket {bucket!r} does not exist at {_endpoint(s3)} (NoSuchBucket); "
            f"create it or fix {param}"
        )
    if code in DENIED:
        return UserError(
            f"{uri}: access denied ({code}) for {what}; check the credentials and the bucket policy"
        )
    if status >= 500 or code in THROTTLED:  # botocore retried these already
        return _unreachable(e, uri, s3, what=what, endpoint_key=endpoint_key)
    message = e.response.get("Error", {}).get("Message", "")
    return UserError(f"{uri}: S3 error {code} ({message}) for {what}; check {param}")


def _unreachable(e: Exception, uri: str, s3: Any, *, what: str, endpoint_key: str):
    attempts = s3.meta.config.retries.get("total_max_attempts", 1)
    return StoreUnavailable(
        f"{uri}: store unreachable (cannot reach {_endpoint(s3)}: {what} failed {attempts} "
        f"times, last: {type(e).__name__}: {e}); check {endpoint_key} and the network"
    )


def _endpoint(s3: Any) -> str:
    return s3.meta.endpoint_url


def split_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key/parts -> ("bucket", "key/parts")."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def sha256_checksum(sha256_hex: str) -> str:
    """S3's ChecksumSHA256 of a single-part object: base64 of the raw digest."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def multipart_sha256(path: Path, part_size: int) -> tuple[str, str]:
    """(S3's ChecksumSHA256 of `path` uploaded in parts of `part_size`, the file's sha256),
    in one read. The first is base64(sha256(concatenated part digests)), without the
    "-<parts>" AWS appends."""
    parts, whole = [], hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(part_size):
            parts.append(hashlib.sha256(block).digest())
            whole.update(block)
    composite = base64.b64encode(hashlib.sha256(b"".join(parts)).digest()).decode()
    return composite, whole.hexdigest()
