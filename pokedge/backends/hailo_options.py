"""Settings of the Hailo backend, read from a plain dict (config file or CLI flags)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pokedge.errors import BackendError

APIS = ("auto", "infer_model", "vstreams")
MODES = ("async", "sync")
OUTPUT_FORMATS = ("float32", "uint8")

# The group id that processes sharing one device through the multi-process
# service agree on; HailoRT's own default, "UNIQUE", never shares.
SHARED_GROUP_ID = "SHARED"


@dataclass(frozen=True)
class HailoOptions:
    """Hailo backend settings; every field has a default that works on a Pi 5 with one AI Kit or AI HAT+."""

    # HailoRT's own default timeout for vstreams is 10000 ms.
    timeout_ms: int = 10_000
    # Frames submitted with run_async before the oldest one is waited for.
    frames_in_flight: int = 4
    mode: str = "async"
    api: str = "auto"
    output_format: str = "float32"
    # 0 lets HailoRT choose the batch size.
    batch_size: int = 0
    multi_process_service: bool = False
    group_id: str | None = None
    scheduler_priority: int | None = None
    device_ids: tuple[str, ...] | None = None
    network_name: str = ""
    # Attempts per batch before the backend gives up; each retry re-creates the VDevice.
    max_attempts: int = 3
    backoff_ms: int = 200
    max_backoff_ms: int = 2_000

    @property
    def effective_group_id(self) -> str | None:
        """The VDevice group id to request; None keeps HailoRT's default."""
        if self.group_id:
            return self.group_id
        return SHARED_GROUP_ID if self.multi_process_service else None

    def backoff_seconds(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based): doubles each time up to max_backoff_ms."""
        delay_ms = min(self.backoff_ms * (2 ** (attempt - 1)), self.max_backoff_ms)
        return delay_ms / 1000.0


def hailo_options_from_dict(data: dict[str, Any] | None) -> HailoOptions:
    """Build and validate HailoOptions; raise BackendError naming the bad key and value."""
    if data is None:
        return HailoOptions()
    if isinstance(data, HailoOptions):
        return data
    if not isinstance(data, dict):
        raise BackendError(f"hailo options must be a mapping, got {type(data).__name__}")

    known = {f.name for f in fields(HailoOptions)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BackendError(f"unknown hailo option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}")

    values = dict(data)
    for key in ("timeout_ms", "frames_in_flight", "max_attempts"):
        if key in values:
            values[key] = _int(values[key], key, minimum=1)
    for key in ("batch_size", "backoff_ms", "max_backoff_ms"):
        if key in values:
            values[key] = _int(values[key], key, minimum=0)
    if values.get("scheduler_priority") is not None:
        values["scheduler_priority"] = _int(values["scheduler_priority"], "scheduler_priority", minimum=0)
    for key, allowed in (("mode", MODES), ("api", APIS), ("output_format", OUTPUT_FORMATS)):
        if key in values and values[key] not in allowed:
            raise BackendError(f"hailo option {key} must be one of {', '.join(allowed)}, got {values[key]!r}")
    if "multi_process_service" in values and not isinstance(values["multi_process_service"], bool):
        raise BackendError(
            f"hailo option multi_process_service must be true or false, got {values['multi_process_service']!r}"
        )
    for key in ("group_id", "network_name"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise BackendError(f"hailo option {key} must be a string, got {values[key]!r}")
    if values.get("device_ids") is not None:
        ids = values["device_ids"]
        if isinstance(ids, str) or not all(isinstance(i, str) and i for i in ids):
            raise BackendError(f"hailo option device_ids must be a list of device ids like '0000:01:00.0', got {ids!r}")
        values["device_ids"] = tuple(ids)

    return HailoOptions(**values)


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BackendError(f"hailo option {key} must be an integer >= {minimum}, got {value!r}")
    return value


def add_hailo_arguments(parser) -> None:
    """Add the command-line flags that set HailoOptions."""
    group = parser.add_argument_group("Hailo device")
    group.add_argument("--hailo-service", action="store_true",
                       help="share the device with other processes through the HailoRT multi-process service "
                       "(hailort.service must run)")
    group.add_argument("--hailo-group-id", metavar="ID",
                       help=f"VDevice group id (default {SHARED_GROUP_ID} with --hailo-service, else HailoRT's own)")
    group.add_argument("--hailo-timeout-ms", type=int, metavar="MS",
                       help="inference timeout in milliseconds (default 10000)")
    group.add_argument("--hailo-api", choices=APIS, help="HailoRT API to use (default auto: InferModel if present)")


def hailo_options_from_args(args) -> HailoOptions:
    """Build HailoOptions from the flags added by add_hailo_arguments."""
    data: dict[str, Any] = {}
    if getattr(args, "hailo_service", False):
        data["multi_process_service"] = True
    if getattr(args, "hailo_group_id", None):
        data["group_id"] = args.hailo_group_id
    if getattr(args, "hailo_timeout_ms", None) is not None:
        data["timeout_ms"] = args.hailo_timeout_ms
    if getattr(args, "hailo_api", None):
        data["api"] = args.hailo_api
    return hailo_options_from_dict(data)
