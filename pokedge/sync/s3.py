"""The S3 client that sync uses, and translation of its errors into messages a user can act on.

Credentials come only from boto3's standard chain (environment, shared
credentials file, instance or IoT role). Only the name of the chain's source
is ever logged, never a key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from pokedge.sync.config import SyncConfig
from pokedge.sync.errors import ManifestError, TransferError

_log = logging.getLogger(__name__)

# Manifests are small JSON files; refuse anything much larger rather than read it into memory.
MAX_MANIFEST_BYTES = 16 << 20
# HTTP status codes and error codes worth retrying: throttling and server faults.
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_RETRY_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD or a listing reports about one object."""

    key: str
    size: int
    etag: str
    encryption: str | None = None


def make_client(config: SyncConfig) -> Any:
    """Create an S3 client for the configured region and endpoint, with botocore's own retries kept short.

    Sync retries a failed part itself, from the byte where it stopped, so
    botocore's retries only cover the request that opens each part.
    """
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


def fetch_manifest(client: Any, bucket: str, key: str) -> tuple[bytes, str]:
    """Download the manifest; return its bytes and ETag."""
    try:
        head = client.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] > MAX_MANIFEST_BYTES:
            raise ManifestError(f"project manifest s3://{bucket}/{key} is {head['ContentLength']} bytes; "
                                f"the limit is {MAX_MANIFEST_BYTES} bytes")
        response = client.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])
        data = response["Body"].read(MAX_MANIFEST_BYTES + 1)
    except (BotoCoreError, ClientError) as exc:
        raise describe_error(exc, bucket, key, what="project manifest") from exc
    return data, head["ETag"]


def head_object(client: Any, bucket: str, key: str) -> ObjectInfo:
    """Return the size, ETag and server-side encryption of one object."""
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        raise describe_error(exc, bucket, key) from exc
    return ObjectInfo(key, int(head["ContentLength"]), head["ETag"], head.get("ServerSideEncryption"))


def list_objects(client: Any, bucket: str, prefix: str) -> list[ObjectInfo]:
    """List every object under a folder key."""
    found = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found.append(ObjectInfo(item["Key"], int(item["Size"]), item.get("ETag", "")))
    except (BotoCoreError, ClientError) as exc:
        raise describe_error(exc, bucket, prefix, what="listing") from exc
    return found


def is_transient(exc: BaseException) -> bool:
    """Whether a failed request is worth retrying: connection faults, timeouts, throttling, 5xx."""
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
