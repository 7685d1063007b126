"""Sync settings: defaults, then the config file, then the environment, then flags.

The config file is TOML with a `[sync]` table. It is read from `--config`,
else `$POKEDGE_CONFIG`, else `/etc/pokedge/sync.toml` overlaid by
`$XDG_CONFIG_HOME/pokedge/sync.toml` (default `~/.config`). It is separate
from the daemon's /etc/pokedge/config.toml, which rejects unknown sections.
Example:

    [sync]
    bucket = "pokemon-card-training-us-east-2"
    prefix = "project/pokemon-card-recognition/"
    region = "us-east-2"
    endpoint_url = "http://127.0.0.1:8333"   # S3-compatible stores only
    keep = 3

Credentials are never part of these settings: boto3 reads them from its
standard chain (environment, shared credentials file, instance or IoT role).
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from pokedge import paths
from pokedge.sync.errors import ConfigError

_log = logging.getLogger(__name__)

DEFAULT_BUCKET = "pokemon-card-training-us-east-2"
DEFAULT_PREFIX = "project/pokemon-card-recognition/"
DEFAULT_REGION = "us-east-2"
MANIFEST_KEY = "metadata/project_manifest.json"
DEVICES = ("auto", "cpu", "hailo8", "hailo8l")
MIB = 1 << 20


@dataclass(frozen=True)
class SyncConfig:
    """Sync settings: the S3 source, the data folder, and the download and retry limits."""

    bucket: str = DEFAULT_BUCKET
    prefix: str = DEFAULT_PREFIX
    region: str = DEFAULT_REGION
    endpoint_url: str | None = None
    data_dir: Path | None = None
    keep: int = 3
    device: str = "auto"
    workers: int = 4
    part_size_mb: int = 8
    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 60.0
    reserve_mb: int = 100

    @property
    def manifest_key(self) -> str:
        return self.prefix + MANIFEST_KEY

    @property
    def part_size(self) -> int:
        return self.part_size_mb * MIB

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir) if self.data_dir else paths.data_dir()


# Environment variable of each setting.
ENVIRONMENT = {
    "bucket": "POKEDGE_S3_BUCKET",
    "prefix": "POKEDGE_S3_PREFIX",
    "region": "POKEDGE_S3_REGION",
    "endpoint_url": "POKEDGE_S3_ENDPOINT_URL",
    "data_dir": "POKEDGE_DATA_DIR",
    "keep": "POKEDGE_SYNC_KEEP",
    "device": "POKEDGE_SYNC_DEVICE",
    "workers": "POKEDGE_SYNC_WORKERS",
    "part_size_mb": "POKEDGE_SYNC_PART_SIZE_MB",
    "retries": "POKEDGE_SYNC_RETRIES",
    "backoff_s": "POKEDGE_SYNC_BACKOFF_S",
    "timeout_s": "POKEDGE_SYNC_TIMEOUT_S",
    "reserve_mb": "POKEDGE_SYNC_RESERVE_MB",
}


def load_config(flags: Mapping[str, Any] | None = None, config_path: Path | None = None,
                environ: Mapping[str, str] | None = None) -> SyncConfig:
    """Merge defaults, config file, environment and flags (later wins); flags set to None are ignored."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}

    for path in _config_files(config_path, environ):
        values.update(_read_config_file(path))
    for name, variable in ENVIRONMENT.items():
        if environ.get(variable):
            values[name] = environ[variable]
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = value

    return _build(values)


def _config_files(explicit: Path | None, environ: Mapping[str, str]) -> list[Path]:
    if explicit is not None:
        if not Path(explicit).exists():
            raise ConfigError(f"config file not found: {explicit}")
        return [Path(explicit)]
    if environ.get("POKEDGE_CONFIG"):
        path = Path(environ["POKEDGE_CONFIG"])
        if not path.exists():
            raise ConfigError(f"config file not found: {path} (from POKEDGE_CONFIG)")
        return [path]

    config_home = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    candidates = [Path("/etc/pokedge/sync.toml"), config_home / "pokedge" / "sync.toml"]
    return [path for path in candidates if path.is_file()]


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    table = document.get("sync", {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: 'sync' must be a table ([sync])")
    known = {f.name for f in fields(SyncConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)} in [sync]; "
                          f"known settings are {', '.join(sorted(known))}")
    _log.debug("read sync settings from %s", path)
    return dict(table)


def _build(values: dict[str, Any]) -> SyncConfig:
    config = SyncConfig()
    types = {f.name: f.type for f in fields(SyncConfig)}
    converted: dict[str, Any] = {}
    for name, value in values.items():
        converted[name] = _convert(name, value, types[name])

    config = replace(config, **converted)
    _check(config)
    return replace(config, prefix=_normalize_prefix(config.prefix))


def _convert(name: str, value: Any, kind: str) -> Any:
    try:
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "Path | None":
            return Path(value).expanduser()
        if kind in ("str", "str | None"):
            if not isinstance(value, str):
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"sync setting '{name}' must be of type {kind}, got {value!r}") from None
    raise ConfigError(f"sync setting '{name}' has an unsupported type {kind}")


def _check(config: SyncConfig) -> None:
    if not config.bucket:
        raise ConfigError("sync setting 'bucket' is empty; set --bucket or POKEDGE_S3_BUCKET")
    if config.device not in DEVICES:
        raise ConfigError(f"sync setting 'device' must be one of {', '.join(DEVICES)}, got {config.device!r}")
    minimums = {"keep": 1, "workers": 1, "part_size_mb": 1, "retries": 0, "reserve_mb": 0}
    for name, minimum in minimums.items():
        if getattr(config, name) < minimum:
            raise ConfigError(f"sync setting '{name}' must be at least {minimum}, got {getattr(config, name)}")
    if config.backoff_s < 0 or config.timeout_s <= 0:
        raise ConfigError(f"sync settings 'backoff_s' must be >= 0 and 'timeout_s' > 0, "
                          f"got {config.backoff_s} and {config.timeout_s}")
    if config.endpoint_url and not config.endpoint_url.startswith(("http://", "https://")):
        raise ConfigError(f"sync setting 'endpoint_url' must start with http:// or https://, got {config.endpoint_url!r}")


def _normalize_prefix(prefix: str) -> str:
    """Strip a leading slash and end the prefix with exactly one slash (an empty prefix is the bucket root)."""
    prefix = prefix.strip().lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if any(part in ("", ".", "..") for part in prefix.rstrip("/").split("/")) and prefix:
        raise ConfigError(f"sync setting 'prefix' has an empty, '.' or '..' segment: {prefix!r}")
    return prefix
