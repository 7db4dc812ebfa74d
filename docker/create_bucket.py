"""Create the pipeline's bucket (DVC remote and published runs) if it does not exist yet.

The compose stack's one-shot `minio-init` job; safe to run again. Reads the environment only:
S3_BUCKET, AWS_ENDPOINT_URL (MinIO; unset = AWS), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION, S3_VERSIONING (`true` keeps every version of an overwritten object, so
a replaced champion pointer can be recovered).
"""

from __future__ import annotations

import os
import re
import sys
import time

from tasks.common import UserError, log, run_main

# S3's rules for new bucket names (lowercase, 3-63, no dots-as-IP, no leading/trailing dash).
BUCKET_NAME = re.compile(r"^(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def ensure_bucket(client, *, bucket: str, versioning: bool = False) -> bool:
    """Create `bucket` unless it exists; True if it was created. Turns versioning on if asked."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
        created = False
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("403", "AccessDenied", "Forbidden"):
            raise UserError(
                f"bucket {bucket!r} exists but these credentials cannot use it "
                "(pick another S3_BUCKET or fix the key's policy)"
            ) from None
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
        region = client.meta.region_name
        kwargs = {}
        if region and region != "us-east-1":  # AWS rejects an explicit us-east-1 constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            client.create_bucket(Bucket=bucket, **kwargs)
            created = True
        except ClientError as e2:  # a concurrent run created it first
            if e2.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise
            created = False
    if versioning:
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return created


def wait_for_endpoint(client, *, attempts: int, delay: float) -> None:
    """Retry `list_buckets` until the store answers (MinIO may still be starting)."""
    from botocore.exceptions import BotoCoreError, ClientError

    for attempt in range(1, attempts + 1):
        try:
            client.list_buckets()
            return
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                raise UserError(
                    f"the object store rejected the credentials ({code}): check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in .env"
                ) from None
            error: Exception = e
        except BotoCoreError as e:
            error = e
        log.info("object store not ready (%s), attempt %d/%d", error, attempt, attempts)
        if attempt < attempts:
            time.sleep(delay)
    raise UserError(
        f"the object store at {client.meta.endpoint_url} did not answer after {attempts} attempts"
    )


def main() -> None:
    import boto3
    from botocore.config import Config

    bucket = os.environ.get("S3_BUCKET", "")
    if not BUCKET_NAME.match(bucket):
        raise UserError(
            f"S3_BUCKET={bucket!r} is not a valid bucket name (3-63 lowercase "
            "letters, digits, dots or dashes)"
        )
    missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(k)]
    if missing:
        raise UserError(f"set {', '.join(missing)} (copy .env.example to .env)")
    versioning = os.environ.get("S3_VERSIONING", "false").lower() in ("1", "true", "yes")
    attempts = os.environ.get("S3_WAIT_ATTEMPTS", "30")
    if not attempts.isdigit() or int(attempts) < 1:
        raise UserError(f"S3_WAIT_ATTEMPTS={attempts!r}: must be a whole number >= 1")
    # Few retries inside botocore: wait_for_endpoint does the patient waiting, visibly.
    client = boto3.client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(
            retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=60
        ),
    )
    wait_for_endpoint(client, attempts=int(attempts), delay=2.0)
    created = ensure_bucket(client, bucket=bucket, versioning=versioning)
    print(
        f"bucket {bucket}: {'created' if created else 'already there'}"
        f"{', versioning on' if versioning else ''}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    run_main(main)
