"""Reading the optional JSON files that `pokedge gallery build` writes beside a gallery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pokedge.errors import GalleryError

REBUILD = "rebuild the gallery with 'pokedge gallery build'"


def read_sidecar(path: Path, schema: str, key: str, kind: type) -> Any | None:
    """Return `document[key]` of the JSON file at `path`, None when the file is absent.

    Raise GalleryError naming the file when it is not JSON, has another
    schema, or its `key` is not of type `kind`.
    """
    if not path.is_file():
        return None

    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GalleryError(f"{path} is not valid JSON: {exc}; {REBUILD}") from None

    value = document.get(key) if isinstance(document, dict) else None
    if not isinstance(value, kind) or document.get("schema") != schema:
        raise GalleryError(f"{path}: expected schema {schema!r} with {key!r} ({kind.__name__}); {REBUILD}")
    return value
