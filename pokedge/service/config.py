"""Settings of `pokedge serve`: built-in defaults, then the TOML config file, then command-line flags.

The config file (scripts/install.sh writes /etc/pokedge/config.toml) has
the sections [serve], [camera], [tracker] and [scanlog]; every key is
optional and named like the ServiceConfig, Picamera2Options and
TrackerConfig fields. Unknown keys and wrong types raise ConfigError naming
the file, the key and the expected type.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pokedge.capture.picamera2 import Picamera2Options
from pokedge.errors import PokedgeError
from pokedge.service.tracker import TrackerConfig

DEFAULT_CONFIG = Path("/etc/pokedge/config.toml")
DEFAULT_HTTP = "127.0.0.1:8765"
RECOGNITION_MODES = ("auto", "sequential", "pipelined")


class ConfigError(PokedgeError):
    """A config file or option value that cannot be used."""


@dataclass
class ServiceConfig:
    """Everything the daemon needs to run."""

    source: str = "picamera2"
    http: str = DEFAULT_HTTP
    data_dir: Path | None = None  # default: pokedge.paths.data_dir() (systemd's StateDirectory under the unit)
    backend: str = "auto"
    model: Path | None = None
    gallery: Path | None = None
    threads: int | None = None
    recognition: str = "auto"  # sequential, pipelined, or auto: pipelined on at least 2 usable cores
    read_numbers: bool = True  # OCR of the collector number on matched cards
    strip_extensions: bool = True  # second look at the whole-card quads around an unknown card's quad
    loop: bool = False
    realtime: bool = True  # False plays files and folders as fast as possible
    folder_fps: float = 5.0
    read_timeout: float = 1.0  # seconds one capture may take before it counts as a stall
    stall_reads: int = 2  # timed-out captures in a row after which the source is reopened
    camera_wait: float = 20.0  # seconds to wait for the first frame before reporting ready anyway
    status_interval: float = 10.0  # seconds between STATUS= updates to systemd
    sse_heartbeat: float = 15.0
    save_images: bool = True
    min_free_mb: int = 200
    camera: Picamera2Options = field(default_factory=Picamera2Options)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def http_address(self) -> tuple[str, int]:
        return parse_http_address(self.http)


# Types of the keys whose default is None or a tuple, which the defaults alone cannot tell.
_OPTIONAL_TYPES: dict[str, type] = {"data_dir": Path, "model": Path, "gallery": Path, "threads": int,
                                    "lens_position": float}
_SIZE_KEYS = {"main_size", "lores_size"}
_SECTIONS = {"serve": None, "camera": "camera", "tracker": "tracker", "scanlog": None}
_SCANLOG_KEYS = {"save_images", "min_free_mb"}


def parse_http_address(text: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT); raise ConfigError naming the value."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--http {text!r} is not HOST:PORT (for example {DEFAULT_HTTP})")
    return host.strip("[]"), int(port)


def load_config_file(path: Path) -> dict[str, dict[str, Any]]:
    """Read the TOML file; raise ConfigError with the file name and the parser's message."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; create it or leave out --config") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None

    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}; known: {', '.join(_SECTIONS)}")
    for name, section in data.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: [{name}] must be a table of keys")
    return data


def build_config(file_data: dict[str, dict[str, Any]], overrides: dict[str, Any], source: str = "config",
                 tracker_overrides: dict[str, Any] | None = None) -> ServiceConfig:
    """Apply the config file, then the command-line `overrides` (None values are ignored)."""
    config = ServiceConfig()
    serve = dict(file_data.get("serve", {}))
    serve.update({k: v for k, v in file_data.get("scanlog", {}).items()})
    for key in file_data.get("scanlog", {}):
        if key not in _SCANLOG_KEYS:
            raise ConfigError(f"{source}: unknown key [scanlog] {key}; known: {', '.join(sorted(_SCANLOG_KEYS))}")

    config = _apply(config, serve, "serve", source, skip={"camera", "tracker"})
    config.camera = _apply(config.camera, file_data.get("camera", {}), "camera", source)
    config.tracker = _apply(config.tracker, file_data.get("tracker", {}), "tracker", source)
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    tracker_overrides = {k: v for k, v in (tracker_overrides or {}).items() if v is not None}
    if tracker_overrides:
        config.tracker = replace(config.tracker, **tracker_overrides)

    _validate(config, source)
    return config


def _apply(target, values: dict[str, Any], section: str, source: str, skip: set[str] = frozenset()):
    known = {f.name: f for f in fields(target) if f.name not in skip}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key [{section}] {key}; known: {', '.join(sorted(known))}")
        changes[key] = _coerce(key, value, getattr(target, key), section, source)
    return replace(target, **changes)


def _coerce(key: str, value: Any, default: Any, section: str, source: str) -> Any:
    where = f"{source}: [{section}] {key}"
    if key in _SIZE_KEYS:
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            raise ConfigError(f"{where} must be [WIDTH, HEIGHT] in pixels, got {value!r}")
        return (value[0], value[1])

    expected = _OPTIONAL_TYPES.get(key) or type(default)
    if expected is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a path string, got {value!r}")
        return Path(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"{where} must be a whole number, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{where} must be of type {expected.__name__}, got {value!r}")
    return value


def _validate(config: ServiceConfig, source: str) -> None:
    parse_http_address(config.http)
    try:
        config.camera.validate()
        config.tracker.validate()
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for name in ("read_timeout", "camera_wait", "status_interval", "sse_heartbeat", "folder_fps"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{source}: {name} must be a positive number of seconds, got {getattr(config, name)}")
    if config.stall_reads < 1:
        raise ConfigError(f"{source}: stall_reads must be at least 1, got {config.stall_reads}")
    if config.recognition not in RECOGNITION_MODES:
        raise ConfigError(f"{source}: recognition must be one of {', '.join(RECOGNITION_MODES)}, "
                          f"got {config.recognition!r}")
    if config.threads is not None and config.threads < 1:
        raise ConfigError(f"{source}: threads must be at least 1, got {config.threads}")
