"""Checking a downloaded file against its expected size and sha256, or, without a sha256, its S3 ETag.

An ETag is the MD5 of the object for single-part uploads without SSE-KMS,
and the MD5 of the part MD5s followed by "-<parts>" for multipart uploads.
The part size of a multipart upload is not recorded, so common sizes are
tried; when none reproduces the ETag, or the object is encrypted with KMS,
only the size is checked and the returned method is "size".
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from pokedge.contract import file_sha256
from pokedge.sync.errors import ChecksumError

_log = logging.getLogger(__name__)

MIB = 1 << 20
# Part sizes that common S3 clients use for multipart uploads (aws cli and boto3 8 MiB, others 5-100 MiB).
_COMMON_PART_SIZES = (8 * MIB, 5 * MIB, 16 * MIB, 15 * MIB, 10 * MIB, 50 * MIB, 64 * MIB, 100 * MIB, 128 * MIB)


@dataclass(frozen=True)
class Expected:
    """The expected size of a file, and its sha256 or ETag."""

    size: int
    sha256: str | None = None
    etag: str | None = None
    encryption: str | None = None


def verify_file(path: Path, expected: Expected, name: str) -> str:
    """Raise ChecksumError unless `path` matches; return how it was checked ("sha256", "etag" or "size")."""
    size = path.stat().st_size
    if size != expected.size:
        raise ChecksumError(f"{name}: downloaded {size} bytes, expected {expected.size}; "
                            f"the object on the server differs from the manifest, republish it")

    if expected.sha256:
        actual = file_sha256(path)
        if actual != expected.sha256:
            raise ChecksumError(f"{name}: sha256 {actual} does not match the manifest's {expected.sha256}; "
                                f"the object on the server is corrupt or was replaced, republish it")
        return "sha256"

    if expected.etag:
        verdict = etag_matches(path, expected.etag, expected.encryption)
        if verdict is False:
            raise ChecksumError(f"{name}: content does not match the server's ETag {expected.etag}; "
                                f"the download is corrupt, run the sync again")
        if verdict is True:
            return "etag"
    return "size"


def etag_matches(path: Path, etag: str, encryption: str | None = None) -> bool | None:
    """Return whether the file's MD5-based ETag equals `etag`, or None when the ETag cannot be reproduced."""
    etag = etag.strip('"')
    if encryption == "aws:kms" or not etag:
        return None

    if "-" not in etag:
        return _md5_file(path) == etag

    digest, _, parts_text = etag.partition("-")
    if not parts_text.isdigit():
        return None
    parts = int(parts_text)
    size = path.stat().st_size
    for part_size in _candidate_part_sizes(size, parts):
        if _multipart_etag(path, part_size) == f"{digest}-{parts}":
            return True
    return None


def _candidate_part_sizes(size: int, parts: int) -> list[int]:
    candidates = [p for p in _COMMON_PART_SIZES if math.ceil(size / p) == parts]
    # Clients that pick the part size from the file size often round size/parts up to a whole MiB.
    guessed = math.ceil(size / parts / MIB) * MIB
    if guessed and math.ceil(size / guessed) == parts and guessed not in candidates:
        candidates.append(guessed)
    return candidates


def _multipart_etag(path: Path, part_size: int) -> str:
    digests = []
    with open(path, "rb") as handle:
        while chunk := handle.read(part_size):
            digests.append(hashlib.md5(chunk).digest())
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()
