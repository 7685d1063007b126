"""Backend selection: the fallback matrix for auto and hailo, and the mid-run switch to ONNX Runtime."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from hailo_fixtures import fake_hailo, sample_images, tiny_models  # noqa: F401
from pokedge.backends import probe
from pokedge.backends.fallback import FallbackBackend, adapt_images
from pokedge.backends.hailo_errors import failure_from_exception, status_code
from pokedge.backends.onnx import OnnxBackend
from pokedge.backends.select import explain_auto, open_backend
from pokedge.errors import BackendError

IMAGES = sample_images(4, seed=11)


def _warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "pokedge.backends.select"]


# Each case: how to break the device, the text the user must see, and the status code (None for non-HailoRT causes).
FAILURES = {
    "no_module": (dict(remove=True), "hailo_platform is not importable", None),
    "binding_mismatch": (dict(env={"FAKE_HAILO_BINDING_VERSION": "4.20.0"}), "does not match", None),
    "no_device_node": (dict(nodes=0), "no Hailo device node", 74),
    "no_device_scanned": (dict(devices=""), "no free Hailo device", 74),
    "held_by_other_process": (dict(env={"FAKE_HAILO_OPEN_STATUS": "74"}), "another process holds it", 74),
    "device_in_use": (dict(env={"FAKE_HAILO_OPEN_STATUS": "73"}), "in use by another process", 73),
    "permission_4_19": (dict(version="4.19.0", env={"FAKE_HAILO_OPEN_STATUS": "36"}), "permission denied", 36),
    "permission_4_23": (dict(env={"FAKE_HAILO_OPEN_STATUS": "36"}), "permission denied", 36),
    "driver_not_installed": (dict(env={"FAKE_HAILO_OPEN_STATUS": "64"}), "hailo_pci kernel driver", 64),
    "driver_version": (dict(env={"FAKE_HAILO_OPEN_STATUS": "76"}), "different versions", 76),
    "service_down": (dict(options={"multi_process_service": True}), "multi-process service did not answer", 77),
    "hef_arch_contract": (dict(hef_target="hailo8"), "cannot run on this HAILO8L device", 93),
    "hef_arch_runtime_4_23": (dict(hef_target="hailo8", contract_target="unknown"),
                              "compiled for another Hailo architecture", 93),
    "hef_arch_runtime_4_20": (dict(version="4.20.0", hef_target="hailo8", contract_target="unknown"),
                              "compiled for another Hailo architecture", 26),
}


def _break(fake_hailo, tiny_models, case):
    """Set up the double for one failure case; return (hef contract, hailo options)."""
    spec, _, _ = FAILURES[case]
    if spec.get("remove"):
        fake_hailo.remove()
        fake_hailo.dev_dir.joinpath("hailo0").touch()
    else:
        fake_hailo.load(version=spec.get("version", "4.23.0"),
                        devices=spec.get("devices", "0000:01:00.0=HAILO8L"),
                        nodes=spec.get("nodes", 1), **spec.get("env", {}))
    contract = tiny_models.hef()
    if "hef_target" in spec:
        contract = tiny_models.write_hef_variant(f"case-{case}", target=spec["hef_target"],
                                                 contract_target=spec.get("contract_target"))
    return contract, spec.get("options")


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_auto_falls_back_with_one_warning(fake_hailo, tiny_models, caplog, case):
    if case == "binding_mismatch":
        with pytest.raises(ImportError):
            _break(fake_hailo, tiny_models, case)
        # The import failed during setup; later imports fail the same way.
        import sys

        sys.modules.pop("hailo_platform", None)
        hef, options = tiny_models.hef(), None
    else:
        hef, options = _break(fake_hailo, tiny_models, case)
    _, text, code = FAILURES[case]

    with caplog.at_level(logging.WARNING):
        backend = open_backend("auto", tiny_models.onnx(), hef, hailo_options=options)
    assert isinstance(backend, OnnxBackend)
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert text in warnings[0].message
    assert "fix:" in warnings[0].message
    if code is not None:
        assert f"status {code}" in warnings[0].message
    assert backend.embed(IMAGES).shape == (len(IMAGES), 768)
    backend.close()


@pytest.mark.parametrize("case", sorted(set(FAILURES) - {"binding_mismatch"}))
def test_hailo_choice_raises_reason(fake_hailo, tiny_models, case):
    hef, options = _break(fake_hailo, tiny_models, case)
    _, text, _ = FAILURES[case]
    with pytest.raises(BackendError) as info:
        open_backend("hailo", tiny_models.onnx(), hef, hailo_options=options)
    assert text in str(info.value)
    assert "fix:" in str(info.value)


def test_permission_denied_on_node(fake_hailo, tiny_models, monkeypatch):
    fake_hailo.load()
    monkeypatch.setattr(probe.os, "access", lambda path, mode: False)
    with pytest.raises(BackendError, match="permission denied on .*hailo0"):
        open_backend("hailo", tiny_models.onnx(), tiny_models.hef())


def test_warning_logged_once(fake_hailo, tiny_models, caplog):
    fake_hailo.load(nodes=0)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            open_backend("auto", tiny_models.onnx(), tiny_models.hef()).close()
    assert len(_warnings(caplog)) == 1


def test_auto_uses_usable_device(fake_hailo, tiny_models, caplog):
    fake_hailo.load()
    with caplog.at_level(logging.WARNING):
        backend = open_backend("auto", tiny_models.onnx(), tiny_models.hef())
    assert isinstance(backend, FallbackBackend)
    assert backend.name == "hailo"
    assert backend.contract.format == "hef"
    assert not _warnings(caplog)
    assert backend.embed(IMAGES).shape == (len(IMAGES), 768)
    assert backend.status()["frames"] == {"hailo": len(IMAGES)}
    backend.close()


def test_hailo8l_hef_on_hailo8_device(fake_hailo, tiny_models):
    fake_hailo.load(devices="0000:01:00.0=HAILO8")
    backend = open_backend("hailo", tiny_models.onnx(), tiny_models.hef())
    assert backend.name == "hailo"
    backend.close()


def test_auto_on_hailort_417(fake_hailo, tiny_models):
    fake_hailo.load(version="4.17.0")
    backend = open_backend("auto", tiny_models.onnx(), tiny_models.hef())
    assert backend.status()["primary"]["api"] == "vstreams"
    backend.close()


def test_auto_without_hef_is_onnx(tiny_models, caplog):
    with caplog.at_level(logging.WARNING):
        backend = open_backend("auto", tiny_models.onnx(), None)
    assert isinstance(backend, OnnxBackend)
    assert not _warnings(caplog)
    backend.close()


def test_hailo_without_hef_contract(tiny_models):
    with pytest.raises(BackendError, match="needs a HEF model contract"):
        open_backend("hailo", tiny_models.onnx(), None)


def test_unknown_choice(tiny_models):
    with pytest.raises(BackendError, match="unknown backend 'gpu'"):
        open_backend("gpu", tiny_models.onnx())


def test_midrun_failure_switches_to_onnx(fake_hailo, tiny_models, caplog):
    knobs = fake_hailo.load()
    backend = open_backend("auto", tiny_models.onnx(), tiny_models.hef(), hailo_options={"backoff_ms": 1})
    first = backend.embed(IMAGES)

    knobs.run_faults.extend(["stream_abort"] * 50)
    with caplog.at_level(logging.ERROR):
        second = backend.embed(IMAGES)
    onnx = OnnxBackend(tiny_models.onnx())
    expected = onnx.embed(IMAGES)

    assert second.shape == (len(IMAGES), 768)
    np.testing.assert_allclose(second, expected, atol=1e-6)
    assert np.sum(first * expected, axis=1).min() > 0.999
    assert backend.name == "onnx"
    assert backend.contract.format == "onnx"
    status = backend.status()
    assert status["fallback"] is True
    assert status["requested"] == "hailo"
    assert "HAILO_STREAM_ABORT" in status["fallback_reason"]
    assert status["fallback_at_frame"] == len(IMAGES)
    assert status["frames"] == {"hailo": len(IMAGES), "onnx": len(IMAGES)}
    assert status["primary"]["retries"] == 2
    assert any("switching from hailo to onnx" in r.message for r in caplog.records)

    third = backend.embed(IMAGES[:2])
    np.testing.assert_allclose(third, expected[:2], atol=1e-6)
    assert backend.status()["frames"]["onnx"] == len(IMAGES) + 2
    backend.close()
    onnx.close()


def test_fallback_counts_exact_across_threads(fake_hailo, tiny_models):
    knobs = fake_hailo.load()
    backend = open_backend("auto", tiny_models.onnx(), tiny_models.hef(), hailo_options={"backoff_ms": 1})
    knobs.run_faults.extend(["stream_abort"] * 50)
    backend.embed(IMAGES)  # the faults make this call switch to ONNX Runtime
    calls_per_thread = 25

    def embed_many():
        for _ in range(calls_per_thread):
            backend.embed(IMAGES[:1])

    threads = [threading.Thread(target=embed_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert backend.status()["frames"]["onnx"] == len(IMAGES) + 4 * calls_per_thread
    backend.close()


def test_midrun_transient_stays_on_hailo(fake_hailo, tiny_models):
    knobs = fake_hailo.load()
    backend = open_backend("auto", tiny_models.onnx(), tiny_models.hef(), hailo_options={"backoff_ms": 1})
    knobs.run_faults.append("stream_abort")
    assert backend.embed(IMAGES).shape == (len(IMAGES), 768)
    status = backend.status()
    assert status["fallback"] is False
    assert status["primary"]["retries"] == 1
    backend.close()


def test_fallback_failure_reports_both(fake_hailo, tiny_models):
    knobs = fake_hailo.load()
    hailo = open_backend("hailo", tiny_models.onnx(), tiny_models.hef(), hailo_options={"backoff_ms": 1})

    def broken_onnx():
        raise BackendError("ONNX model not found: /missing.onnx")

    backend = FallbackBackend(hailo, broken_onnx)
    knobs.run_faults.extend(["stream_abort"] * 50)
    with pytest.raises(BackendError, match="ONNX fallback could not open either"):
        backend.embed(IMAGES)
    backend.close()


def test_adapt_images_colour_and_size(tiny_models):
    import dataclasses

    onnx = tiny_models.onnx()
    bgr = dataclasses.replace(onnx, input=dataclasses.replace(onnx.input, color="BGR", height=112, width=112))
    images = sample_images(2)
    adapted = adapt_images(images, onnx, bgr)
    assert adapted.shape == (2, 112, 112, 3)
    assert adapted[0, 0, 0, 0] == images[0, 0, 0, 2]


def test_explain_auto(fake_hailo, tiny_models):
    fake_hailo.load()
    assert explain_auto(tiny_models.onnx(), tiny_models.hef()).backend == "hailo"
    assert explain_auto(tiny_models.onnx(), tiny_models.hef(), try_open=False).backend == "hailo"
    assert explain_auto(tiny_models.onnx(), None).backend == "onnx"

    fake_hailo.load(FAKE_HAILO_OPEN_STATUS="74")
    selection = explain_auto(tiny_models.onnx(), tiny_models.hef())
    assert selection.backend == "onnx"
    assert "another process holds it" in selection.reason
    assert "fuser" in selection.fix


def test_status_code_from_message_and_class():
    class HailoRTTimeout(Exception):
        pass

    assert status_code(Exception("libhailort failed with error: 77 (HAILO_RPC_FAILED)")) == 77
    assert status_code(HailoRTTimeout("x")) == 4
    assert status_code(ValueError("nothing")) is None
    assert failure_from_exception(RuntimeError("HailoRT device not found in the system")).reason == \
        "no Hailo device found"
    assert failure_from_exception(Exception("error: 999")).code == 999
