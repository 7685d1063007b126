"""`pokedge doctor` on a machine without HailoRT and with the HailoRT double."""

from __future__ import annotations

import json
import re
import sys
import types

import numpy as np
import pytest

from hailo_fixtures import fake_hailo, tiny_models  # noqa: F401
from pokedge.backends.base import l2_normalize
from pokedge.cli import main
from pokedge.commands import doctor
from pokedge.gallery.store import CardInfo, save_gallery
from pokedge.parity import build_record, record_path, save_record


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake /sys with a Hailo PCIe function and a fake /dev with one camera node."""
    pci = tmp_path / "sys" / "bus" / "pci" / "devices"
    hailo = pci / "0000:01:00.0"
    hailo.mkdir(parents=True)
    for name, value in (("vendor", "0x1e60"), ("current_link_speed", "8.0 GT/s PCIe"), ("current_link_width", "1"),
                        ("max_link_speed", "8.0 GT/s PCIe"), ("max_link_width", "4")):
        (hailo / name).write_text(value + "\n")
    other = pci / "0000:00:00.0"
    other.mkdir()
    (other / "vendor").write_text("0x14e4\n")
    dev = tmp_path / "devices"
    dev.mkdir()
    (dev / "video0").touch()
    monkeypatch.setattr(doctor, "SYS_PCI_DEVICES", pci)
    monkeypatch.setattr(doctor, "DEV_DIR", dev)
    return tmp_path


@pytest.fixture
def picamera2(monkeypatch):
    module = types.ModuleType("picamera2")

    class Picamera2:
        @staticmethod
        def global_camera_info():
            return [{"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a", "Num": 0}]

    module.Picamera2 = Picamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)


def _gallery(path, producer):
    rows = l2_normalize(np.random.default_rng(0).standard_normal((3, 768)))
    ids = ["base1-1", "base1-2", "base1-3"]
    save_gallery(path, rows, ids, {i: CardInfo(i, i, "base1", i[-1]) for i in ids}, producer)
    return path


def _args(tiny_models, tmp_path, hef=None):
    args = ["doctor", "--model", str(tiny_models.onnx_contract), "--data-dir", str(tmp_path / "data"),
            "--gallery", str(_gallery(tmp_path / "gallery", tiny_models.onnx().model_id))]
    if hef is not None:
        args += ["--hef", str(hef)]
    return args


def test_doctor_without_hailort(fake_hailo, tiny_models, machine, capsys, monkeypatch):
    fake_hailo.remove()
    monkeypatch.setitem(sys.modules, "picamera2", None)
    status = main(_args(tiny_models, machine, tiny_models.hef_contracts["raw_uint8"]))
    output = capsys.readouterr().out

    assert status == 0
    assert "python" in output
    assert re.search(r"^hailort\s+not importable", output, re.M)
    assert "picamera2: not installed" in output
    assert "V4L2 nodes: 1" in output
    assert "0000:01:00.0 8.0 GT/s PCIe x1 (max 8.0 GT/s PCIe x4)" in output
    assert re.search(r"^auto backend\s+onnx: no Hailo device node", output, re.M)
    assert "to use hailo" in output
    assert re.search(r"^usable with onnx\s+yes", output, re.M)
    assert re.search(r"^usable with hailo\s+no:", output, re.M)


def test_doctor_with_device(fake_hailo, tiny_models, machine, picamera2, capsys):
    fake_hailo.load(version="4.20.0")
    hef = tiny_models.write_hef_variant("doctor")
    save_record(build_record(tiny_models.onnx(), hef, {
        "cosines": np.array([0.999]), "mean_cosine": 0.999, "min_cosine": 0.999, "top1_agreement": 1.0,
        "top1_against": "test", "worst_samples": []}, "4.20.0"), record_path(hef))
    try:
        status = main(_args(tiny_models, machine, hef.source) + ["--json"])
    finally:
        record_path(hef).unlink()
    report = json.loads(capsys.readouterr().out)

    assert status == 0
    assert report["hailo"]["hailort_version"] == "4.20.0"
    assert report["hailo"]["architecture"] == "HAILO8L"
    assert report["hailo"]["device_ids"] == ["0000:01:00.0"]
    assert report["hailo"]["usable"] is True
    assert report["pcie"][0]["current_link_speed"] == "8.0 GT/s PCIe"
    assert report["camera"]["picamera2"][0]["model"] == "imx708"
    assert report["models"]["onnx"]["model_id"] == tiny_models.onnx().model_id
    assert report["models"]["hef"]["hailo_encoding"] == "raw_uint8"
    assert report["models"]["gallery"]["producer"] == tiny_models.onnx().model_id
    assert report["models"]["gallery"]["usable_with_hailo"] == "yes"
    assert report["auto_backend"]["backend"] == "hailo"
    assert "opened on the Hailo device" in report["auto_backend"]["reason"]


def test_doctor_probe_only(fake_hailo, tiny_models, machine, picamera2, capsys):
    knobs = fake_hailo.load()
    status = main(_args(tiny_models, machine, tiny_models.hef_contracts["raw_uint8"]) + ["--no-open"])
    output = capsys.readouterr().out
    assert status == 0
    assert re.search(r"^auto backend\s+hailo:", output, re.M)
    assert "probe only" in output
    assert knobs.vdevices_created == 0


def test_doctor_device_busy(fake_hailo, tiny_models, machine, picamera2, capsys):
    fake_hailo.load(FAKE_HAILO_OPEN_STATUS="74")
    main(_args(tiny_models, machine, tiny_models.hef_contracts["raw_uint8"]))
    output = capsys.readouterr().out
    assert re.search(r"^auto backend\s+onnx: no free Hailo device", output, re.M)
    assert "fuser" in output


def test_doctor_missing_model(fake_hailo, tmp_path, machine, capsys):
    fake_hailo.remove()
    status = main(["doctor", "--model", str(tmp_path / "absent.contract.json"), "--data-dir", str(tmp_path / "d")])
    output = capsys.readouterr().out
    assert status == 0
    assert "model problem" in output
    assert "not found" in output
