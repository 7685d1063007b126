"""Test double for the libcamera Python bindings: only the autofocus control enums pokedge uses.

Values follow libcamera's control_ids_core.yaml. Tests put tests/fake_picamera2
on sys.path; this package is never installed.
"""

from enum import IntEnum
from types import SimpleNamespace


class AfModeEnum(IntEnum):
    Manual = 0
    Auto = 1
    Continuous = 2


class AfTriggerEnum(IntEnum):
    Start = 0
    Cancel = 1


class AfStateEnum(IntEnum):
    Idle = 0
    Scanning = 1
    Focused = 2
    Failed = 3


controls = SimpleNamespace(AfModeEnum=AfModeEnum, AfTriggerEnum=AfTriggerEnum, AfStateEnum=AfStateEnum)
