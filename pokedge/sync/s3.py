"""The S3 client that sync uses, and translation of its errors into messages a user can act on.

Credentials come only from boto3's standard chain (environment, shared
credentials file, instance or IoT role). Only the name of the chain's source
is ever logged, never a key.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from pokedge.sync.config import SyncConfig
from pokedge.sync.errors import ManifestError, TransferError

_log = logging.getLogger(__name__)

# Manifests are small JSON files; refuse anything much larger rather than read it into memory.
MAX_MANIFEST_BYTES = 16 << 20
# HTTP status codes and error codes worth retrying: throttling and server faults.
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_RETRY_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}
MAX_BACKOFF_S = 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a request that failed for a transient reason."""

    retries: int = 5
    backoff_s: float = 1.0

    @classmethod
    def from_config(cls, config: SyncConfig) -> "RetryPolicy":
        return cls(config.retries, config.backoff_s)

    def delay(self, failures: int) -> float:
        """Exponential backoff with jitter, in seconds, before retry number `failures`."""
        return min(self.backoff_s * 2 ** (failures - 1), MAX_BACKOFF_S) * random.uniform(0.5, 1.0)


def call_with_retries(action: Callable[[], T], what: str, policy: RetryPolicy) -> T:
    """Run one S3 request, retrying connection faults, throttling and 5xx responses with backoff."""
    failures = 0
    while True:
        try:
            return action()
        except (BotoCoreError, ClientError) as exc:
            if not is_transient(exc) or failures >= policy.retries:
                raise
            failures += 1
            delay = policy.delay(failures)
            _log.warning("retrying %s in %.1f s (retry %d of %d) after: %s", what, delay, failures, policy.retries, exc)
            time.sleep(delay)


@dataclass(frozen=True)
class ObjectInfo:
    """Size, ETag and encryption of one object, from HEAD or a listing."""

    key: str
    size: int
    etag: str
    encryption: str | None = None


def make_client(config: SyncConfig) -> Any:
    """Create an S3 client for the configured region and endpoint, with botocore's own retries kept short.

    Sync retries a failed part itself, from the byte where it stopped, so
    botocore's retries only cover the request that opens each part.
    """
    # Imported here, not at module import: boto3 and botocore.config add about 110 ms and
    # 20 MB to every pokedge process, and only sync needs them.
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=config.region)
    credentials = session.get_credentials()
    if credentials is None:
        _log.warning("no AWS credentials found (environment, shared credentials file, instance role); "
                     "requests will fail unless the bucket allows them")
    else:
        _log.info("using AWS credentials from %s", credentials.method)

    botocore_config = Config(
        region_name=config.region,
        retries={"total_max_attempts": 2, "mode": "standard"},
        connect_timeout=min(config.timeout_s, 10.0),
        read_timeout=config.timeout_s,
        max_pool_connections=config.workers + 2,
        user_agent_extra="pokedge-sync",
    )
    return session.client("s3", endpoint_url=config.endpoint_url, config=botocore_config)


def fetch_manifest(client: Any, bucket: str, key: str, policy: RetryPolicy = RetryPolicy()) -> tuple[bytes, str]:
    """Download the manifest; return its bytes and ETag."""
    def fetch() -> tuple[bytes, str]:
        head = client.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] > MAX_MANIFEST_BYTES:
            raise ManifestError(f"project manifest s3://{bucket}/{key} is {head['ContentLength']} bytes; "
                                f"the limit is {MAX_MANIFEST_BYTES} bytes")
        response = client.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])
        return response["Body"].read(MAX_MANIFEST_BYTES + 1), head["ETag"]

    try:
        return call_with_retries(fetch, f"s3://{bucket}/{key}", policy)
    except (BotoCoreError, ClientError) as exc:
        raise describe_error(exc, bucket, key, what="project manifest") from exc


def head_object(client: Any, bucket: str, key: str, policy: RetryPolicy = RetryPolicy()) -> ObjectInfo:
    """Return the size, ETag and server-side encryption of one object."""
    try:
        head = call_with_retries(lambda: client.head_object(Bucket=bucket, Key=key), f"s3://{bucket}/{key}", policy)
    except (BotoCoreError, ClientError) as exc:
        raise describe_error(exc, bucket, key) from exc
    return ObjectInfo(key, int(head["ContentLength"]), head["ETag"], head.get("ServerSideEncryption"))


def list_objects(client: Any, bucket: str, prefix: str, policy: RetryPolicy = RetryPolicy()) -> list[ObjectInfo]:
    """List every object under a folder key."""
    def listing() -> list[ObjectInfo]:
        found = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found.append(ObjectInfo(item["Key"], int(item["Size"]), item.get("ETag", "")))
        return found

    try:
        return call_with_retries(listing, f"listing of s3://{bucket}/{prefix}", policy)
    except (BotoCoreError, ClientError) as exc:
        raise describe_error(exc, bucket, prefix, what="listing") from exc


def is_transient(exc: BaseException) -> bool:
    """Return whether a failed request is worth retrying: connection faults, timeouts, throttling, 5xx."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        return status in _RETRY_STATUS or code in _RETRY_CODES
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return False
    return isinstance(exc, (BotoCoreError, ConnectionError, TimeoutError))


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def describe_error(exc: BaseException, bucket: str, key: str, what: str = "object") -> TransferError:
    """Turn a boto3 error into a TransferError that names the object and the likely fix."""
    where = f"s3://{bucket}/{key}"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return TransferError(f"no usable AWS credentials for {where}; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                             f"a profile in ~/.aws/credentials, or an instance role")
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error_code(exc)
        if code in ("NoSuchKey", "404", "NotFound"):
            return TransferError(f"{what} not found: {where}; check --bucket and --prefix")
        if code == "NoSuchBucket":
            return TransferError(f"bucket not found: {bucket}; check --bucket and --endpoint-url")
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return TransferError(f"access denied to {where} ({code}); check the AWS credentials and their "
                                 f"permissions for this bucket")
        if code in ("PreconditionFailed", "412"):
            return TransferError(f"{where} changed on the server during the sync; run the sync again")
        return TransferError(f"S3 request for {where} failed: {code} (HTTP {status})")
    return TransferError(f"S3 request for {where} failed: {exc}; check the network and --endpoint-url")
