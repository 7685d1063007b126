"""The HailoRT test double follows the documented API and failure behaviour.

These tests pin the behaviour the backend tests rely on, so a change to the
double that makes it less like HailoRT fails here first.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from hailo_fixtures import FAKE_DIR, fake_hailo, sample_images, tiny_models  # noqa: F401


def _open_model(hailo_platform, hef_path, output_format=None):
    vdevice = hailo_platform.VDevice()
    model = vdevice.create_infer_model(str(hef_path))
    if output_format is not None:
        model.output().set_format_type(output_format)
    return vdevice, model


def test_create_infer_model_keyword_by_version(fake_hailo):
    fake_hailo.load(version="4.18.0")
    import hailo_platform

    assert "network_name" in inspect.signature(hailo_platform.VDevice.create_infer_model).parameters

    fake_hailo.load(version="4.19.0")
    import hailo_platform

    assert "name" in inspect.signature(hailo_platform.VDevice.create_infer_model).parameters

    fake_hailo.load(version="4.17.0")
    import hailo_platform

    assert not hasattr(hailo_platform.VDevice, "create_infer_model")


@pytest.mark.parametrize("version, present, absent", [
    ("4.19.0", ["HailoRTPCIeDriverException"], ["HailoRTDriverOperationFailedException",
                                                "HailoCommunicationClosedException",
                                                "HailoRTHEFNotCompatibleWithDevice"]),
    ("4.20.0", ["HailoRTDriverOperationFailedException", "HailoCommunicationClosedException"],
     ["HailoRTPCIeDriverException", "HailoRTHEFNotCompatibleWithDevice"]),
    ("4.23.0", ["HailoRTDriverOperationFailedException", "HailoRTHEFNotCompatibleWithDevice"],
     ["HailoRTPCIeDriverException"]),
])
def test_exception_classes_by_version(fake_hailo, version, present, absent):
    fake_hailo.load(version=version)
    from hailo_platform.pyhailort import pyhailort

    for name in present:
        assert hasattr(pyhailort, name), name
    for name in absent:
        assert not hasattr(pyhailort, name), name


def test_status_chained_from_raw_exception(fake_hailo):
    knobs = fake_hailo.load(devices="")
    import hailo_platform

    with pytest.raises(hailo_platform.HailoRTException) as info:
        hailo_platform.VDevice()
    assert "libhailort failed with error: 74 (HAILO_OUT_OF_PHYSICAL_DEVICES)" in str(info.value)
    assert type(info.value.__cause__) is knobs.HailoRTStatusException
    assert info.value.__cause__.args[0] == "74"
    assert not isinstance(info.value.__cause__, hailo_platform.HailoRTException)


@pytest.mark.parametrize("version, status, class_name", [
    ("4.19.0", 36, "HailoRTPCIeDriverException"),
    ("4.23.0", 36, "HailoRTDriverOperationFailedException"),
    ("4.23.0", 76, "HailoRTException"),
    ("4.23.0", 77, "HailoRTException"),
])
def test_open_status_maps_to_class(fake_hailo, version, status, class_name):
    fake_hailo.load(version=version, FAKE_HAILO_OPEN_STATUS=str(status))
    import hailo_platform

    with pytest.raises(hailo_platform.HailoRTException) as info:
        hailo_platform.VDevice()
    assert type(info.value).__name__ == class_name
    assert info.value.__cause__.args[0] == str(status)


def test_second_unique_vdevice_is_out_of_devices(fake_hailo):
    fake_hailo.load()
    import hailo_platform

    first = hailo_platform.VDevice()
    with pytest.raises(hailo_platform.HailoRTException, match="error: 74"):
        hailo_platform.VDevice()
    params = hailo_platform.VDevice.create_params()
    params.device_ids = ["0000:01:00.0"]
    with pytest.raises(hailo_platform.HailoRTException, match="error: 73"):
        hailo_platform.VDevice(params)
    first.release()
    hailo_platform.VDevice().release()


def test_equal_group_id_shares_in_process(fake_hailo):
    fake_hailo.load()
    import hailo_platform

    params = hailo_platform.VDevice.create_params()
    params.group_id = "SHARED"
    first = hailo_platform.VDevice(params)
    second = hailo_platform.VDevice(params)
    first.release()
    second.release()


def test_multi_process_service_needs_service(fake_hailo):
    fake_hailo.load()
    import hailo_platform

    params = hailo_platform.VDevice.create_params()
    params.multi_process_service = True
    with pytest.raises(hailo_platform.HailoRTException, match="error: 77"):
        hailo_platform.VDevice(params)


def test_device_held_by_other_process(fake_hailo, tmp_path, tiny_models):
    """While a child process has the device open, a plain VDevice here gets 74 and the service path shares it."""
    fake_hailo.load(FAKE_HAILO_LOCK_DIR=str(tmp_path), FAKE_HAILO_SERVICE="1")
    import hailo_platform

    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(FAKE_DIR)!r})
            import hailo_platform
            device = hailo_platform.VDevice()
            print("ready", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(hailo_platform.HailoRTException, match="error: 74"):
            hailo_platform.VDevice()

        params = hailo_platform.VDevice.create_params()
        params.multi_process_service = True
        params.group_id = "SHARED"
        shared = hailo_platform.VDevice(params)
        model = shared.create_infer_model(str(tiny_models.hef().model_path))
        assert model.input_names
        shared.release()
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def test_infer_model_needs_creating_process(fake_hailo, tiny_models, monkeypatch):
    fake_hailo.load()
    import hailo_platform
    from hailo_platform.pyhailort import pyhailort

    vdevice = hailo_platform.VDevice()
    real_pid = pyhailort.os.getpid()
    monkeypatch.setattr(pyhailort.os, "getpid", lambda: real_pid + 1)
    with pytest.raises(hailo_platform.HailoRTException, match="process"):
        vdevice.create_infer_model(str(tiny_models.hef().model_path))
    monkeypatch.undo()
    vdevice.release()


def test_uint8_output_with_quant_info(fake_hailo, tiny_models):
    fake_hailo.load()
    import hailo_platform

    vdevice, model = _open_model(hailo_platform, tiny_models.hef().model_path)
    output = model.output()
    assert tuple(output.shape) == (1, 1, 768)
    assert output.format.type == hailo_platform.FormatType.UINT8
    quant = output.quant_infos[0]
    assert quant.qp_scale == pytest.approx(tiny_models.output_quant["scale"])
    assert quant.qp_zp == pytest.approx(128.0)

    with model.configure() as configured:
        bindings = configured.create_bindings()
        bindings.input().set_buffer(np.ascontiguousarray(sample_images(1)[0]))
        result = np.empty(output.shape, dtype=np.uint8)
        bindings.output().set_buffer(result)
        configured.run([bindings], 5000)
    assert result.dtype == np.uint8
    assert result.max() > result.min()
    vdevice.release()


def test_non_contiguous_input_fails_at_run(fake_hailo, tiny_models):
    fake_hailo.load()
    import hailo_platform
    from hailo_platform.pyhailort import pyhailort

    vdevice, model = _open_model(hailo_platform, tiny_models.hef().model_path)
    with model.configure() as configured:
        bindings = configured.create_bindings()
        frame = sample_images(1)[0][:, ::-1]
        bindings.input().set_buffer(frame)  # accepted here; HailoRT checks at run
        bindings.output().set_buffer(np.empty(model.output().shape, dtype=np.uint8))
        with pytest.raises(pyhailort.HailoRTInvalidOperationException):
            configured.run([bindings], 5000)
    vdevice.release()


def test_wrong_output_size_fails_at_run(fake_hailo, tiny_models):
    fake_hailo.load()
    import hailo_platform
    from hailo_platform.pyhailort import pyhailort

    vdevice, model = _open_model(hailo_platform, tiny_models.hef().model_path, hailo_platform.FormatType.FLOAT32)
    with model.configure() as configured:
        bindings = configured.create_bindings()
        bindings.input().set_buffer(np.ascontiguousarray(sample_images(1)[0]))
        bindings.output().set_buffer(np.empty(model.output().shape, dtype=np.uint8))  # FLOAT32 needs 4x bytes
        with pytest.raises(pyhailort.HailoRTInvalidOperationException) as info:
            configured.run([bindings], 5000)
        assert info.value.__cause__.args[0] == "6"
    vdevice.release()


def test_async_callback_keyword_on_other_thread(fake_hailo, tiny_models):
    fake_hailo.load()
    import hailo_platform

    vdevice, model = _open_model(hailo_platform, tiny_models.hef().model_path)
    seen = {}

    def on_done(completion_info):
        seen["thread"] = threading.get_ident()
        seen["exception"] = completion_info.exception

    with model.configure() as configured:
        bindings = configured.create_bindings()
        bindings.input().set_buffer(np.ascontiguousarray(sample_images(1)[0]))
        bindings.output().set_buffer(np.empty(model.output().shape, dtype=np.uint8))
        configured.wait_for_async_ready(timeout_ms=1000, frames_count=1)
        job = configured.run_async([bindings], on_done)
        job.wait(5000)
    assert seen["exception"] is None
    assert seen["thread"] != threading.get_ident()
    vdevice.release()


def test_async_ready_times_out_beyond_queue(fake_hailo, tiny_models):
    fake_hailo.load()
    import hailo_platform
    from hailo_platform.pyhailort import pyhailort

    vdevice, model = _open_model(hailo_platform, tiny_models.hef().model_path)
    with model.configure() as configured:
        size = configured.get_async_queue_size()
        with pytest.raises(pyhailort.HailoRTTimeout):
            configured.wait_for_async_ready(timeout_ms=50, frames_count=size + 1)
    vdevice.release()


def test_hung_job_times_out(fake_hailo, tiny_models):
    knobs = fake_hailo.load()
    import hailo_platform
    from hailo_platform.pyhailort import pyhailort

    vdevice, model = _open_model(hailo_platform, tiny_models.hef().model_path)
    knobs.run_faults.append("hang")
    configured = model.configure()
    bindings = configured.create_bindings()
    bindings.input().set_buffer(np.ascontiguousarray(sample_images(1)[0]))
    bindings.output().set_buffer(np.empty(model.output().shape, dtype=np.uint8))
    job = configured.run_async([bindings], lambda completion_info: None)
    with pytest.raises(pyhailort.HailoRTTimeout):
        job.wait(100)
    vdevice.release()
    with pytest.raises(pyhailort.HailoRTStreamAborted):
        job.wait(1000)


@pytest.mark.parametrize("version, class_name", [("4.23.0", "HailoRTHEFNotCompatibleWithDevice"),
                                                 ("4.20.0", "HailoRTInvalidHEFException")])
def test_hailo8_hef_rejected_on_hailo8l(fake_hailo, tiny_models, version, class_name):
    fake_hailo.load(version=version)
    import hailo_platform

    contract = tiny_models.write_hef_variant(f"h8-{version}", target="hailo8")
    vdevice = hailo_platform.VDevice()
    with pytest.raises(hailo_platform.HailoRTException) as info:
        vdevice.create_infer_model(str(contract.model_path))
    assert type(info.value).__name__ == class_name
    vdevice.release()


def test_hailo8l_hef_runs_on_hailo8(fake_hailo, tiny_models):
    fake_hailo.load(devices="0000:01:00.0=HAILO8")
    import hailo_platform

    vdevice = hailo_platform.VDevice()
    assert vdevice.create_infer_model(str(tiny_models.hef().model_path)).output_names
    vdevice.release()


def test_device_identify_and_raw_leak(fake_hailo):
    knobs = fake_hailo.load()
    import hailo_platform
    from hailo_platform.pyhailort import pyhailort

    assert hailo_platform.Device.scan() == ["0000:01:00.0"]
    device = hailo_platform.Device("0000:01:00.0")
    assert device.control.identify().device_architecture == pyhailort.DeviceArchitectureTypes.HAILO8L
    device.release()
    with pytest.raises(knobs.HailoRTStatusException):
        hailo_platform.Device("0000:09:00.0")

    fake_hailo.load(devices="")
    import hailo_platform

    with pytest.raises(hailo_platform.HailoRTException, match="not found in the system"):
        hailo_platform.Device()


def test_binding_version_mismatch_is_import_error(fake_hailo):
    with pytest.raises(ImportError, match="does not match"):
        fake_hailo.load(FAKE_HAILO_BINDING_VERSION="4.20.0")


def test_vstreams_outputs_batch_axis(fake_hailo, tiny_models):
    fake_hailo.load()
    import hailo_platform

    hef = hailo_platform.HEF(str(tiny_models.hef().model_path))
    vdevice = hailo_platform.VDevice()
    params = hailo_platform.ConfigureParams.create_from_hef(hef, interface=hailo_platform.HailoStreamInterface.PCIe)
    network = vdevice.configure(hef, params)[0]
    input_params = hailo_platform.InputVStreamParams.make(network, format_type=hailo_platform.FormatType.UINT8)
    output_params = hailo_platform.OutputVStreamParams.make(network, format_type=hailo_platform.FormatType.FLOAT32)
    with hailo_platform.InferVStreams(network, input_params, output_params) as pipeline:
        results = pipeline.infer({hef.get_input_vstream_infos()[0].name: sample_images(3)})
    (output,) = results.values()
    assert output.shape == (3, 1, 1, 768)
    assert output.dtype == np.float32
    vdevice.release()


def test_double_not_shipped():
    """The double stays out of the package: setuptools' find must not see it, and pokedge never names it."""
    from pathlib import Path

    import setuptools

    repo = Path(__file__).resolve().parent.parent
    packages = setuptools.find_packages(where=str(repo), include=["pokedge*"])
    assert packages
    assert not [p for p in packages if "hailo_platform" in p or "fake" in p]
    for path in (repo / "pokedge").rglob("*.py"):
        assert "fake_hailo" not in path.read_text(), path
