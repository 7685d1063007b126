"""Checks on object keys and local paths taken from the manifest.

The manifest is untrusted input: a key or name from it must not reach an
object outside the project prefix, nor a file outside the version folder
being staged. Every check raises UnsafeKeyError naming the manifest field.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

from pokedge.sync.errors import UnsafeKeyError

# File and folder names that sync creates from manifest values.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_KEY_LENGTH = 1024


def check_relative_key(key: object, field: str, folder: bool = False) -> str:
    """Return `key` if it is a clean key relative to the project prefix; raise UnsafeKeyError otherwise.

    A folder key (an `s3_path`) may end in "/"; the returned folder key always does.
    """
    if not isinstance(key, str) or not key:
        raise UnsafeKeyError(f"manifest field '{field}' must be a non-empty object key, got {key!r}")
    if len(key) > _MAX_KEY_LENGTH:
        raise UnsafeKeyError(f"manifest field '{field}' is a key of {len(key)} characters; the limit is {_MAX_KEY_LENGTH}")
    if key.startswith("/") or "://" in key:
        raise UnsafeKeyError(f"manifest field '{field}' is an absolute key or URL ({key!r}); keys must be relative "
                             f"to the project prefix")
    if "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise UnsafeKeyError(f"manifest field '{field}' contains a backslash or control character: {key!r}")

    body = key[:-1] if folder and key.endswith("/") else key
    parts = body.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeKeyError(f"manifest field '{field}' has an empty, '.' or '..' path segment: {key!r}")
    return body + "/" if folder else body


def key_from_s3_path(value: object, bucket: str, prefix: str, field: str) -> str:
    """Turn an `s3_path` (s3:// URL or bare key) into a folder key relative to the project prefix.

    Raise UnsafeKeyError when it names another bucket or a place outside the prefix.
    """
    if not isinstance(value, str) or not value:
        raise UnsafeKeyError(f"manifest field '{field}' must be an s3:// URL or key, got {value!r}")

    if value.startswith("s3://"):
        url = urlparse(value)
        if url.netloc != bucket:
            raise UnsafeKeyError(f"manifest field '{field}' points at bucket {url.netloc!r} ({value}), "
                                 f"outside the project bucket {bucket!r}")
        full = url.path.lstrip("/")
    elif "://" in value or value.startswith("/"):
        raise UnsafeKeyError(f"manifest field '{field}' must be an s3:// URL or a relative key, got {value!r}")
    else:
        full = value if value.startswith(prefix) else prefix + value

    if not full.startswith(prefix):
        raise UnsafeKeyError(f"manifest field '{field}' points at {value}, outside the project prefix "
                             f"s3://{bucket}/{prefix}")
    relative = full[len(prefix):]
    if not relative:
        raise UnsafeKeyError(f"manifest field '{field}' points at the project prefix itself ({value}), not a folder in it")
    return check_relative_key(relative, field, folder=True)


def check_name(name: object, field: str) -> str:
    """Return `name` if it is safe as one file or folder name; raise UnsafeKeyError otherwise."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or name in (".", ".."):
        raise UnsafeKeyError(f"manifest field '{field}' must be a plain file or folder name (letters, digits, "
                             f"'.', '_', '-'; at most 128 characters), got {name!r}")
    return name


def slug(text: str, max_length: int = 48) -> str:
    """Turn free text (a release label, a model id) into a safe folder name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return cleaned[:max_length].rstrip("-._") or "unnamed"


def local_path(root: Path, relative: str, field: str) -> Path:
    """Join `relative` under `root`; raise UnsafeKeyError if the result resolves outside `root`."""
    if relative.startswith("/") or any(part in ("", ".", "..") for part in relative.split("/")):
        raise UnsafeKeyError(f"manifest field '{field}' gives local path {relative!r}, which is not a plain relative path")
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise UnsafeKeyError(f"manifest field '{field}' gives local path {relative!r}, which resolves outside {root}")
    return root / relative
