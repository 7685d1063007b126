"""Hailo chip detection for selecting the HEF, and which HEF targets run on which chip."""

from __future__ import annotations

import pytest

from pokedge.sync import device


@pytest.fixture()
def hailo_node(monkeypatch):
    monkeypatch.setattr(device.glob, "glob", lambda pattern: ["/dev/hailo0"])


def test_explicit_setting_wins(monkeypatch):
    monkeypatch.setattr(device.glob, "glob", lambda pattern: [])
    assert device.detect_device("hailo8l") == "hailo8l"


def test_no_device_node_is_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(device.glob, "glob", lambda pattern: [])
    assert device.detect_device("auto", tmp_path) == "cpu"


def test_identified_chip_is_remembered(hailo_node, monkeypatch, tmp_path):
    monkeypatch.setattr(device, "_identify_with_cli", lambda: "hailo8")
    assert device.detect_device("auto", tmp_path) == "hailo8"

    # The daemon now has the device open, so identification fails and the remembered chip is used.
    monkeypatch.setattr(device, "_identify_with_cli", lambda: None)
    assert device.detect_device("auto", tmp_path) == "hailo8"


def test_unidentified_chip_falls_back_to_cpu(hailo_node, monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(device, "_identify_with_cli", lambda: None)
    assert device.detect_device("auto", tmp_path) == "cpu"
    assert "could not identify the chip" in caplog.text


@pytest.mark.parametrize("target, chip, runs", [
    ("hailo8l", "hailo8l", True),
    ("hailo8l", "hailo8", True),
    ("hailo8", "hailo8", True),
    ("hailo8", "hailo8l", False),
    ("hailo8l", "cpu", False),
    ("cpu", "hailo8", False),
])
def test_hef_compatibility(target, chip, runs):
    assert device.hef_runs_on(target, chip) is runs


def test_cli_output_parsed(monkeypatch):
    class Done:
        stdout = "Identifying board\nBoard Name: Hailo-8\nDevice Architecture: HAILO8L\nSerial Number: X\n"

    monkeypatch.setattr(device.shutil, "which", lambda name: "/usr/bin/hailortcli")
    monkeypatch.setattr(device.subprocess, "run", lambda *args, **kwargs: Done())
    assert device._identify_with_cli() == "hailo8l"
