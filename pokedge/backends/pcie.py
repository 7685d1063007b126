"""PCIe facts of Hailo devices, read from sysfs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SYS_PCI_DEVICES = Path("/sys/bus/pci/devices")
# PCI vendor id of Hailo Technologies, as the hailo_pci driver binds it.
HAILO_PCI_VENDOR = "0x1e60"


def hailo_pcie_links(root: Path = SYS_PCI_DEVICES) -> list[dict[str, Any]]:
    """Return the link speed and width of every Hailo PCIe function; empty when none is found."""
    try:
        functions = sorted(root.iterdir())
    except OSError:
        return []

    links = []
    for function in functions:
        if _read(function / "vendor") != HAILO_PCI_VENDOR:
            continue
        links.append({
            "address": function.name,
            "current_link_speed": _read(function / "current_link_speed"),
            "current_link_width": _read(function / "current_link_width"),
            "max_link_speed": _read(function / "max_link_speed"),
            "max_link_width": _read(function / "max_link_width"),
        })
    return links


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
