"""The machine facts of a benchmark run: CPU, cores, memory, accelerator and library versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from pokedge.backends import pcie


def describe_hardware() -> dict:
    """Return the machine facts that make two benchmark runs comparable."""
    return {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_mb": total_memory_mb(),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
        "faiss": _version("faiss"),
        "opencv": _version("cv2"),
        "numpy": _version("numpy"),
        "hailort": hailort_version(),
        "hailo_pcie": hailo_pcie_links(),
    }


def cpu_model() -> str:
    """Return the CPU model from /proc/cpuinfo ("model name", or "Model" on a Raspberry Pi), else platform."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields.get("model name") or fields.get("Model") or fields.get("Hardware") or platform.machine()


def total_memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def hailort_version() -> str | None:
    """Return the installed HailoRT Python binding's version, or None when it does not import."""
    try:
        import hailo_platform
    except Exception:  # a broken binding raises more than ImportError; absent is all the report needs
        return None
    return str(getattr(hailo_platform, "__version__", "unknown"))


def hailo_pcie_links() -> list[dict]:
    """Return the PCIe link speed and width of every Hailo device, read from sysfs; empty when none is found."""
    return [
        {"address": link["address"], "link_speed": link["current_link_speed"],
         "link_width": link["current_link_width"], "max_link_speed": link["max_link_speed"]}
        for link in pcie.hailo_pcie_links()
    ]


def _version(module: str) -> str | None:
    try:
        imported = __import__(module)
    except ImportError:
        return None
    return str(getattr(imported, "__version__", "unknown"))
