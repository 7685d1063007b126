"""Process-wide malloc settings that keep the RSS of a scan process near its working set.

glibc's malloc serves blocks of 128 KiB and more with mmap and unmaps them on
free, but after the first such free it raises that threshold to the freed
block's size (up to 32 MiB on 64-bit). From then on, ONNX Runtime's
activation tensors (several MB each, allocated and freed on every call while
its CPU arena is off) and OpenCV's frame-sized buffers come from the heap,
and the heap keeps the freed pages. Fixing the threshold at its default
turns that adjustment off. On the 2-core x86_64 benchmark machine, a session
of the default model that had embedded 6 crops 7 times peaked at 124 MB of
RSS instead of 182 MB, with the same page faults and CPU time per call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

_log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's default threshold

_result: bool | None = None  # the outcome of the first call


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at 128 KiB, so large freed blocks go back to the kernel; return True when set.

    Runs once per process; later calls return the first result without
    calling mallopt again. Does nothing on other C libraries and platforms.
    """
    global _result
    if _result is None:
        _result = _set_threshold()
    return _result


def _set_threshold() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:  # musl and other C libraries have no usable mallopt
        _log.debug("mallopt unavailable (%s); keeping the C library's malloc settings", exc)
        return False

    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        _log.debug("mallopt(M_MMAP_THRESHOLD, %d) failed; keeping the C library's malloc settings",
                   MMAP_THRESHOLD_BYTES)
        return False
    return True
