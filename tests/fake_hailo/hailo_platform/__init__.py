"""Test double of HailoRT's `hailo_platform` package; only the tests put it on sys.path.

Set FAKE_HAILORT_VERSION before the first import to choose the version whose
names and errors it mimics (default 4.23.0). The knobs that control devices
and faults are in pyhailort/_pyhailort.py.
"""

import os

import hailo_platform.pyhailort._pyhailort as _pyhailort
from hailo_platform.pyhailort.pyhailort import (  # noqa: F401
    HEF,
    AsyncInferJob,
    ConfigureParams,
    Device,
    FormatOrder,
    FormatType,
    HailoRTException,
    HailoRTStreamAbortedByUser,
    HailoSchedulingAlgorithm,
    HailoStreamInterface,
    InferVStreams,
    InputVStreamParams,
    OutputVStreamParams,
    VDevice,
)

__version__ = _pyhailort.__version__

# The real package raises ImportError when its extension and Python layer differ.
_binding = os.environ.get("FAKE_HAILO_BINDING_VERSION")
if _binding and _binding != __version__:
    raise ImportError(f"_pyhailort version ({_binding}) does not match pyhailort version ({__version__})")
