"""The Hailo backend against the HailoRT test double: encodings, APIs, retries and the shared VDevice."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from hailo_fixtures import default_models, fake_hailo, sample_images, tiny_models  # noqa: F401
from pokedge.backends import hailo_device
from pokedge.backends.base import Backend
from pokedge.backends.hailo import HailoBackend
from pokedge.backends.hailo_codec import HailoCodec, QuantInfo, quantization_table
from pokedge.backends.hailo_errors import HailoRunError, HailoUnavailable
from pokedge.backends.onnx import OnnxBackend
from pokedge.errors import BackendError

IMAGES = sample_images(6, seed=3)


@pytest.fixture(scope="module")
def reference(tiny_models):
    backend = OnnxBackend(tiny_models.onnx())
    yield backend.embed(IMAGES)
    backend.close()


@pytest.mark.parametrize("encoding", ["raw_uint8", "normalized_quantized"])
@pytest.mark.parametrize("api, mode, output_format", [
    ("infer_model", "async", "float32"),
    ("infer_model", "sync", "uint8"),
    ("vstreams", "sync", "float32"),
    ("vstreams", "sync", "uint8"),
])
def test_embeddings_match_onnx(fake_hailo, tiny_models, reference, encoding, api, mode, output_format):
    fake_hailo.load()
    backend = HailoBackend(tiny_models.hef(encoding), {"api": api, "mode": mode, "output_format": output_format})
    vectors = backend.embed(IMAGES)

    assert isinstance(backend, Backend)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(IMAGES), 768)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(vectors * reference, axis=1)
    assert cosines.min() > 0.999
    assert backend.status()["api"] == api
    backend.close()


@pytest.mark.parametrize("shape", [(768,), (1, 1, 768), (1, 768)])
def test_output_shapes_flatten(fake_hailo, tiny_models, reference, shape):
    fake_hailo.load()
    contract = tiny_models.write_hef_variant("shape-" + "x".join(map(str, shape)), output_shape=shape)
    backend = HailoBackend(contract)
    vectors = backend.embed(IMAGES)
    assert vectors.shape == (len(IMAGES), 768)
    assert np.sum(vectors * reference, axis=1).min() > 0.999
    backend.close()


def test_wrong_encoding_breaks_parity(fake_hailo, tiny_models, reference):
    """A contract claiming normalized_quantized for a HEF compiled for raw pixels gives wrong embeddings."""
    fake_hailo.load()
    contract = tiny_models.write_hef_variant("mislabelled", encoding="raw_uint8",
                                             contract_encoding="normalized_quantized")
    backend = HailoBackend(contract)
    cosines = np.sum(backend.embed(IMAGES) * reference, axis=1)
    assert cosines.min() < 0.99
    backend.close()


def test_default_model_parity(fake_hailo, default_models):
    """The shipped model through the double: INT8 I/O quantization keeps every cosine above 0.99."""
    fake_hailo.load()
    images = sample_images(4, seed=5)
    onnx = OnnxBackend(default_models.onnx())
    expected = onnx.embed(images)
    onnx.close()
    for encoding in ("raw_uint8", "normalized_quantized"):
        backend = HailoBackend(default_models.hef(encoding))
        cosines = np.sum(backend.embed(images) * expected, axis=1)
        backend.close()
        assert cosines.min() > 0.99, (encoding, cosines)


def test_quantization_table_matches_formula(tiny_models):
    contract = tiny_models.hef("normalized_quantized")
    quant = QuantInfo(scale=5.0 / 255.0, zero_point=127.5)
    table = quantization_table(contract.input, quant).reshape(3, 256)

    spec = contract.input
    for channel in range(3):
        for value in (0, 1, 77, 128, 254, 255):
            x = (value * spec.scale - spec.mean[channel]) / spec.std[channel]
            expected = int(np.clip(np.rint(x / quant.scale + quant.zero_point), 0, 255))
            assert table[channel, value] == expected, (channel, value)


def test_codec_encodes_per_channel(tiny_models):
    contract = tiny_models.hef("normalized_quantized")
    quant = QuantInfo(scale=5.0 / 255.0, zero_point=127.5)
    codec = HailoCodec(contract, quant, QuantInfo(0.01, 128.0), output_is_float=False)
    images = sample_images(2)
    encoded = codec.encode(images)
    table = quantization_table(contract.input, quant).reshape(3, 256)

    assert encoded.dtype == np.uint8
    assert encoded.flags.c_contiguous
    for channel in range(3):
        np.testing.assert_array_equal(encoded[..., channel], table[channel][images[..., channel]])


def test_codec_dequantizes_uint8_outputs(tiny_models):
    codec = HailoCodec(tiny_models.hef(), QuantInfo(1.0, 0.0), QuantInfo(0.5, 100.0), output_is_float=False)
    raw = np.full((2, 1, 1, 768), 104, dtype=np.uint8)
    np.testing.assert_allclose(codec.decode(raw, 2), 2.0)
    with pytest.raises(BackendError, match="expected 3 x 768"):
        codec.decode(raw, 3)


def test_raw_encoding_passes_pixels_through(tiny_models):
    codec = HailoCodec(tiny_models.hef("raw_uint8"), QuantInfo(1.0, 0.0), QuantInfo(0.5, 100.0), True)
    images = sample_images(2)
    np.testing.assert_array_equal(codec.encode(images), images)


def test_hailort_417_uses_vstreams(fake_hailo, tiny_models, reference):
    fake_hailo.load(version="4.17.0")
    backend = HailoBackend(tiny_models.hef())
    assert backend.status()["api"] == "vstreams"
    assert np.sum(backend.embed(IMAGES) * reference, axis=1).min() > 0.999
    backend.close()


@pytest.mark.parametrize("version", ["4.18.0", "4.19.0"])
def test_network_name_keyword_by_version(fake_hailo, tiny_models, version):
    fake_hailo.load(version=version)
    backend = HailoBackend(tiny_models.hef(), {"network_name": "pokedge_embedder"})
    assert backend.embed(IMAGES[:1]).shape == (1, 768)
    backend.close()


def test_infer_model_forced_on_417_fails(fake_hailo, tiny_models):
    fake_hailo.load(version="4.17.0")
    with pytest.raises(BackendError, match="no InferModel API"):
        HailoBackend(tiny_models.hef(), {"api": "infer_model"})
    assert hailo_device.users() == 0


def test_frames_in_flight_bounded(fake_hailo, tiny_models):
    knobs = fake_hailo.load(FAKE_HAILO_LATENCY_S="0.002")
    backend = HailoBackend(tiny_models.hef(), {"frames_in_flight": 2})
    vectors = backend.embed(sample_images(10))
    assert vectors.shape == (10, 768)
    assert knobs.max_in_flight_seen <= 2
    assert knobs.callback_threads
    assert threading.get_ident() not in knobs.callback_threads
    backend.close()


def test_transient_faults_retried(fake_hailo, tiny_models, reference, caplog):
    knobs = fake_hailo.load()
    # One frame in flight, so each attempt meets one fault.
    backend = HailoBackend(tiny_models.hef(), {"backoff_ms": 1, "frames_in_flight": 1})
    knobs.run_faults.extend(["stream_abort", "stream_abort"])
    with caplog.at_level(logging.WARNING):
        vectors = backend.embed(IMAGES)

    assert np.sum(vectors * reference, axis=1).min() > 0.999
    status = backend.status()
    assert status["retries"] == 2
    assert "HAILO_STREAM_ABORT" in status["last_error"]
    assert knobs.vdevices_created == 3
    assert sum("re-creating the VDevice" in r.message for r in caplog.records) == 2
    backend.close()


def test_timeout_retried_after_recreate(fake_hailo, tiny_models, reference):
    knobs = fake_hailo.load()
    backend = HailoBackend(tiny_models.hef(), {"timeout_ms": 300, "backoff_ms": 1})
    knobs.run_faults.append("hang")
    vectors = backend.embed(IMAGES)
    assert np.sum(vectors * reference, axis=1).min() > 0.999
    assert "HAILO_TIMEOUT" in backend.status()["last_error"]
    backend.close()


def test_vstreams_timeout_retried(fake_hailo, tiny_models, reference):
    knobs = fake_hailo.load()
    backend = HailoBackend(tiny_models.hef(), {"api": "vstreams", "timeout_ms": 200, "backoff_ms": 1})
    knobs.run_faults.append("hang")
    vectors = backend.embed(IMAGES)
    assert np.sum(vectors * reference, axis=1).min() > 0.999
    assert backend.status()["retries"] == 1
    backend.close()


def test_failed_recreate_counts_as_attempt(fake_hailo, tiny_models):
    knobs = fake_hailo.load()
    backend = HailoBackend(tiny_models.hef(), {"backoff_ms": 1, "max_attempts": 3})
    knobs.run_faults.append("stream_abort")
    knobs.open_failures.append(74)
    vectors = backend.embed(IMAGES)
    assert vectors.shape == (len(IMAGES), 768)
    assert backend.status()["retries"] == 2
    backend.close()


def test_persistent_faults_raise_run_error(fake_hailo, tiny_models):
    knobs = fake_hailo.load()
    backend = HailoBackend(tiny_models.hef(), {"backoff_ms": 1, "max_attempts": 3})
    knobs.run_faults.extend(["stream_abort"] * 10)
    with pytest.raises(HailoRunError) as info:
        backend.embed(IMAGES)
    assert info.value.attempts == 3
    assert info.value.failure.code == 63
    assert "after 3 attempt(s)" in str(info.value)
    backend.close()


def test_backends_share_one_vdevice(fake_hailo, tiny_models):
    knobs = fake_hailo.load()
    first = HailoBackend(tiny_models.hef("raw_uint8"))
    second = HailoBackend(tiny_models.hef("normalized_quantized"))
    assert knobs.vdevices_created == 1
    assert hailo_device.users() == 2

    first.close()
    assert second.embed(IMAGES[:2]).shape == (2, 768)
    second.close()
    assert hailo_device.users() == 0
    assert knobs._claims == {}


def test_recreate_by_one_backend_refreshes_other(fake_hailo, tiny_models):
    knobs = fake_hailo.load()
    first = HailoBackend(tiny_models.hef(), {"backoff_ms": 1})
    second = HailoBackend(tiny_models.hef())
    knobs.run_faults.append("stream_abort")
    first.embed(IMAGES[:2])
    assert knobs.vdevices_created == 2
    assert second.embed(IMAGES[:2]).shape == (2, 768)
    assert second.status()["retries"] == 0
    first.close()
    second.close()


def test_forked_child_opens_own_vdevice(fake_hailo, tiny_models, monkeypatch):
    knobs = fake_hailo.load(FAKE_HAILO_SERVICE="1")
    options = {"multi_process_service": True}
    parent = HailoBackend(tiny_models.hef(), options)
    inherited = hailo_device._vdevice

    real_pid = hailo_device.os.getpid()
    monkeypatch.setattr(hailo_device.os, "getpid", lambda: real_pid + 1)
    child = HailoBackend(tiny_models.hef(), options)
    assert hailo_device._vdevice is not inherited
    assert inherited in hailo_device._inherited
    assert inherited._vdevice is not None  # the parent's handle was not released
    assert knobs.vdevices_created == 2
    child.close()
    monkeypatch.undo()


def test_open_failure_releases_lease(fake_hailo, tiny_models):
    fake_hailo.load()
    contract = tiny_models.write_hef_variant("h8-only", target="hailo8")
    with pytest.raises(HailoUnavailable) as info:
        HailoBackend(contract)
    assert info.value.failure.code == 93
    assert hailo_device.users() == 0


def test_input_shape_mismatch(fake_hailo, tiny_models):
    import dataclasses

    fake_hailo.load()
    contract = tiny_models.hef()
    contract = dataclasses.replace(contract, input=dataclasses.replace(contract.input, height=200))
    with pytest.raises(BackendError, match=r"takes input \[224, 224, 3\]"):
        HailoBackend(contract)


def test_rejects_onnx_contract(fake_hailo, tiny_models):
    fake_hailo.load()
    with pytest.raises(BackendError, match="runs HEF models"):
        HailoBackend(tiny_models.onnx())


def test_empty_batch_and_closed(fake_hailo, tiny_models):
    fake_hailo.load()
    backend = HailoBackend(tiny_models.hef())
    assert backend.embed(np.zeros((0, 224, 224, 3), dtype=np.uint8)).shape == (0, 768)
    with pytest.raises(ValueError, match="uint8"):
        backend.embed(np.zeros((1, 224, 224, 3), dtype=np.float32))
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.embed(IMAGES[:1])


def test_unknown_option_rejected(fake_hailo, tiny_models):
    fake_hailo.load()
    with pytest.raises(BackendError, match="unknown hailo option"):
        HailoBackend(tiny_models.hef(), {"timeout": 5})
    with pytest.raises(BackendError, match="frames_in_flight"):
        HailoBackend(tiny_models.hef(), {"frames_in_flight": 0})


@pytest.mark.parametrize("models_fixture", ["tiny_models", "default_models"])
def test_parity_figures(fake_hailo, request, models_fixture, capsys):
    """Parity of the double's INT8 output with ONNX on 32 samples; run with -s to see the figures."""
    models = request.getfixturevalue(models_fixture)
    fake_hailo.load()
    images = sample_images(32, seed=8)
    onnx = OnnxBackend(models.onnx())
    expected = onnx.embed(images)
    onnx.close()
    for encoding in ("raw_uint8", "normalized_quantized"):
        backend = HailoBackend(models.hef(encoding))
        cosines = np.sum(backend.embed(images) * expected, axis=1)
        backend.close()
        with capsys.disabled():
            print(f"\n{models_fixture} {encoding}: mean cosine {cosines.mean():.5f}, min {cosines.min():.5f}")
        assert cosines.min() > 0.99


def test_device_ids_option(fake_hailo, tiny_models):
    knobs = fake_hailo.load(devices="0000:01:00.0=HAILO8L,0000:02:00.0=HAILO8")
    backend = HailoBackend(tiny_models.hef(), {"device_ids": ["0000:02:00.0"]})
    assert list(knobs._claims) == ["0000:02:00.0"]
    backend.close()
    with pytest.raises(HailoUnavailable) as info:
        HailoBackend(tiny_models.hef(), {"device_ids": ["0000:09:00.0"]})
    assert info.value.failure.code == 61
