"""The daemon end to end: stack scan, reload, faults (backend, camera, disk, corrupt frames) and the API."""

from __future__ import annotations

import csv
import http.client
import io
import json
import logging
import sqlite3
import time

import pytest

from pokedge import cli
from pokedge.backends.fallback import FallbackBackend
from pokedge.backends.onnx import OnnxBackend
from pokedge.contract import load_contract
from pokedge.errors import BackendError
from pokedge.recognition.runtime import RuntimeSources, open_recognizer
from pokedge.service import daemon as daemon_module
from pokedge.service.recognizers import LoadedRecognizer, describe
from pokedge.service.scanlog import ScanLog
from service_support import corrupt_video_frame, fake_camera, load_soak, small_video, stack_video  # noqa: F401

soak = load_soak()


@pytest.fixture
def sources(tiny_contract, tiny_gallery):
    return RuntimeSources(tiny_contract, tiny_gallery, version="test-version")


@pytest.fixture
def loader(sources):
    return soak.loader_for(sources, threads=1)


def start(video, loader, data_dir, **changes):
    config = soak.service_config(f"file:{video.path}", data_dir, realtime=False, loop=True, **changes)
    running = soak.RunningDaemon(config, loader).start()
    assert running.wait_until(lambda: running.daemon.frames >= 5, timeout=60), "no frames processed"
    return running


def api_get(running, path: str) -> tuple[int, str]:
    host, port = running.daemon.http.address
    connection = http.client.HTTPConnection(host, port, timeout=5)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    return response.status, body


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not in /metrics")


def test_stack_scan_confirms_each_card_once(stack_video, loader, tmp_path, capsys):
    result = soak.run_stack(stack_video, loader, tmp_path)
    summary = result.summary()

    assert summary["confirmed_exactly_once"] == 4, summary
    assert summary["wrong_confirmations"] == []
    assert summary["confirmed_more_than_once"] == []
    assert summary["missed"] == []
    # No timing assert: the latency depends on the machine; the soak script prints it.
    assert summary["settle_to_confirm_frames_max"] is not None

    assert cli.main(["export", "--data-dir", str(tmp_path)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(row["card_id"] for row in rows) == [s.card_id for s in stack_video.segments]
    assert all(row["quantity"] == "1" for row in rows)
    assert all(row["first_seen"].endswith("Z") for row in rows)
    assert set(rows[0]) == {"card_id", "name", "set_id", "set_name", "number", "quantity", "first_seen",
                            "last_seen"}


def test_scan_log_records_versions(small_video, loader, tmp_path):
    running = start(small_video, loader, tmp_path)
    daemon = running.daemon
    assert running.wait_until(lambda: daemon.sink.decisions >= 1, timeout=60)
    daemon.scanlog.flush()
    running.stop()

    row = ScanLog(tmp_path / "scanlog").scans()[-1]
    assert row["model"] == "tests-tiny-pool16:1"
    assert row["gallery"].startswith("tests-tiny-pool16:1@")
    assert row["version"] == "test-version"
    assert row["backend"] == "onnx"


def test_api_while_running(small_video, loader, tmp_path):
    running = start(small_video, loader, tmp_path)

    status, body = api_get(running, "/health")
    assert status == 200, body
    status, body = api_get(running, "/status")
    info = json.loads(body)
    assert info["state"] == "running"
    assert info["versions"]["model"] == "tests-tiny-pool16:1"
    assert info["source"]["state"] == "ok"
    assert info["backend"]["backend"] == "onnx"
    assert info["frames"] >= 5
    status, text = api_get(running, "/metrics")
    assert metric(text, "pokedge_frames_total") >= 5
    assert metric(text, "pokedge_camera_up") == 1
    assert metric(text, "process_resident_memory_bytes") > 10e6
    assert 'pokedge_stage_latency_seconds_count{stage="embed"}' in text
    assert 'pokedge_info{version=' in text

    stop_s = running.stop()
    assert stop_s < 5.0


@pytest.mark.parametrize("recognition", ["sequential", "pipelined"])
def test_reload_swaps_without_reopening(small_video, sources, tmp_path, recognition):
    loads = []

    closed = []

    def load():
        loaded = soak.loader_for(sources, threads=1)()
        backend = loaded.recognizer.backend
        close = backend.close
        backend.close = lambda: (closed.append(backend), close())
        loads.append(loaded)
        return loaded

    running = start(small_video, load, tmp_path, recognition=recognition)
    daemon = running.daemon
    first = daemon.loaded
    assert daemon.recognition == recognition

    daemon.request_reload()
    assert running.wait_until(lambda: daemon.loaded is not first, timeout=60), "reload never swapped in"
    frames_at_swap = daemon.frames
    assert running.wait_until(lambda: daemon.frames > frames_at_swap + 5, timeout=60)
    running.stop()

    assert len(loads) == 2
    assert daemon.source.opens == 1, "a reload must not reopen the camera"
    assert daemon.source.reopens == 0
    assert daemon.frames == daemon.source.frames, "every captured frame must be recognized across the swap"
    assert closed[0] is first.recognizer.backend, "the replaced backend must be closed"
    assert daemon.metrics.reloads.value(result="ok") == 1
    assert any(kind == "status" and data.get("message") == "reloaded" for _, kind, data in running.events)


def install_version(data_dir, version_id: str, contract, gallery) -> None:
    """Lay out a synced version as `pokedge sync` leaves it, and point `current` at it."""
    import os
    import shutil

    from pokedge.sync.versions import CURRENT, VERSIONS, VersionInfo, version_path, write_version_info

    folder = version_path(data_dir, version_id)
    folder.mkdir(parents=True)
    for path in contract.parent.iterdir():
        shutil.copy(path, folder / path.name)
    shutil.copytree(gallery, folder / "gallery")
    info = VersionInfo(version_id=version_id, selection=version_id, release=None, created_at="2026-01-01T00:00:00Z",
                       integrity="sha256", onnx_contract=contract.name, hef_contract=None,
                       galleries={"tests-tiny-pool16:1": "gallery"}, files=())
    write_version_info(folder, info)
    link = data_dir / CURRENT
    partial = data_dir / "current.new"
    os.symlink(f"{VERSIONS}/{version_id}", partial)
    os.replace(partial, link)


def test_reload_picks_up_synced_version(small_video, tiny_contract, tiny_gallery, tmp_path):
    install_version(tmp_path, "v1", tiny_contract, tiny_gallery)
    config = soak.service_config(f"file:{small_video.path}", tmp_path, realtime=False, loop=True, threads=1)
    running = soak.RunningDaemon(config, None).start()
    daemon = running.daemon
    assert running.wait_until(lambda: daemon.frames >= 3, timeout=60)
    assert daemon.status()["versions"]["version"] == "v1"

    install_version(tmp_path, "v2", tiny_contract, tiny_gallery)  # what a finished sync leaves behind
    daemon.request_reload()
    assert running.wait_until(lambda: daemon.loaded.info["version"] == "v2", timeout=60)
    frames = daemon.frames
    assert running.wait_until(lambda: daemon.frames > frames + 3, timeout=60)
    running.stop()

    assert daemon.source.opens == 1
    assert daemon.frames == daemon.source.frames


def test_reload_failure_keeps_running(small_video, sources, tmp_path, caplog):
    calls = []

    def load():
        calls.append(1)
        if len(calls) > 1:
            raise BackendError("model contract missing after a broken sync")
        return soak.loader_for(sources, threads=1)()

    caplog.set_level(logging.ERROR, logger="pokedge.service.recognizers")
    running = start(small_video, load, tmp_path)
    daemon = running.daemon
    first = daemon.loaded

    daemon.request_reload()
    assert running.wait_until(lambda: daemon.metrics.reloads.value(result="failed") == 1, timeout=30)
    frames = daemon.frames
    assert running.wait_until(lambda: daemon.frames > frames + 3, timeout=60)
    status = daemon.status()
    running.stop()

    assert daemon.loaded is first
    assert "broken sync" in status["reload"]["last_error"]
    assert "reload failed" in caplog.text


class FailingHailo:
    """Stands in for a Hailo backend that fails for good after `good` batches."""

    name = "hailo"

    def __init__(self, contract, good: int):
        self.contract = contract
        self.good = good
        self.calls = 0

    def embed(self, images):
        self.calls += 1
        if self.calls > self.good:
            raise BackendError("Hailo device failed: HAILO_TIMEOUT (4) after 3 attempts")
        return OnnxBackend(self.contract).embed(images)

    def close(self):
        pass


@pytest.mark.parametrize("recognition", ["sequential", "pipelined"])
def test_backend_failure_falls_back_to_onnx(small_video, sources, tmp_path, recognition):
    def load():
        recognizer = open_recognizer(sources, "onnx", threads=1, keep_crops=True)
        contract = recognizer.backend.contract
        recognizer.backend = FallbackBackend(FailingHailo(contract, good=3),
                                             lambda: OnnxBackend(load_contract(sources.onnx_contract), threads=1))
        return LoadedRecognizer(recognizer, sources, describe(recognizer, sources))

    running = start(small_video, load, tmp_path, recognition=recognition)
    daemon = running.daemon
    assert running.wait_until(lambda: daemon.metrics.fallbacks.value() == 1, timeout=30)
    frames = daemon.frames
    assert running.wait_until(lambda: daemon.frames > frames + 5, timeout=60)
    stream = daemon._stream
    status = daemon.status()
    text = daemon.metrics_text()
    running.stop()

    assert status["backend"]["fallback"] is True
    assert status["backend"]["backend"] == "onnx"
    assert "HAILO_TIMEOUT" in status["backend"]["fallback_reason"]
    assert status["frame_errors"] == 0, "the fallback re-embeds the failed batch; no frame is lost"
    if recognition == "pipelined":
        # Hailo gets one embedding worker. After the fallback, ONNX Runtime gets one per usable core.
        assert stream.embed_workers == daemon_module.usable_cores()
    assert metric(text, "pokedge_backend_fallbacks_total") == 1
    assert 'backend="onnx"' in text


class BrokenBackend:
    name = "broken"

    def __init__(self, contract):
        self.contract = contract

    def embed(self, images):
        raise BackendError("device gone")

    def close(self):
        pass


@pytest.mark.parametrize("recognition", ["sequential", "pipelined"])
def test_backend_errors_skip_frames_then_reopen(small_video, sources, tmp_path, monkeypatch, recognition):
    from pokedge.service import daemon as daemon_module

    monkeypatch.setattr(daemon_module, "ERRORS_BEFORE_REOPEN", 4)
    loads = []

    def load():
        recognizer = open_recognizer(sources, "onnx", threads=1, keep_crops=True)
        if not loads:
            recognizer.backend = BrokenBackend(recognizer.backend.contract)
        loads.append(recognizer)
        return LoadedRecognizer(recognizer, sources, describe(recognizer, sources))

    config = soak.service_config(f"file:{small_video.path}", tmp_path, realtime=False, loop=True,
                                 recognition=recognition)
    running = soak.RunningDaemon(config, load).start()
    daemon = running.daemon
    assert running.wait_until(lambda: daemon.metrics.reloads.value(result="ok") == 1, timeout=60)
    assert running.wait_until(lambda: daemon.frames >= 5, timeout=60)
    running.stop()

    assert daemon.metrics.frame_errors.value() >= 4
    assert len(loads) == 2
    assert daemon.errors_in_row == 0


def test_disk_full_events_still_stream(small_video, loader, tmp_path, monkeypatch, caplog):
    def disk_full(self, db, record):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(ScanLog, "_insert", disk_full)
    caplog.set_level(logging.ERROR, logger="pokedge.service.scanlog")
    running = start(small_video, loader, tmp_path)
    daemon = running.daemon
    assert running.wait_until(lambda: sum(kind == "confirmed" for _, kind, _ in running.events) >= 3, timeout=120)
    assert running.wait_until(lambda: daemon.scanlog.write_errors >= 3, timeout=10)
    stats = daemon.scanlog.stats()
    running.stop()

    assert stats["written"] == 0
    assert stats["pending"] >= 3
    assert stats["write_errors"] >= 3
    assert len([r for r in caplog.records if "scan log write failed" in r.getMessage()]) == 1


@pytest.mark.parametrize("recognition", ["sequential", "pipelined"])
def test_api_serves_after_corrupt_file_ends(small_video, loader, tmp_path, recognition):
    video = tmp_path / "corrupt.avi"
    video.write_bytes(small_video.path.read_bytes())
    corrupt_video_frame(video, 10)
    config = soak.service_config(f"file:{video}", tmp_path, realtime=False, recognition=recognition)
    running = soak.RunningDaemon(config, loader).start()
    assert running.wait_until(lambda: running.daemon.source_ended, timeout=120)
    text = running.daemon.metrics_text()
    status, body = api_get(running, "/health")
    running.stop()

    assert metric(text, "pokedge_frames_corrupt_total") == 1
    # The count was read after the source ended. In pipelined mode the daemon publishes every frame
    # in flight before it marks the source as ended.
    assert metric(text, "pokedge_frames_total") == small_video.frames - 1
    assert status == 200, body
    assert json.loads(body)["camera"] == "ended"
    assert "confirmed" in [kind for _, kind, _ in running.events]


def test_camera_gone_and_back(fake_camera, loader, tmp_path):
    from pokedge.capture.picamera2 import Picamera2Options

    fake_camera.realtime = True
    config = soak.service_config("picamera2", tmp_path, camera=Picamera2Options(main_size=(320, 240), fps=15),
                                 read_timeout=0.5)
    running = soak.RunningDaemon(config, loader).start()
    daemon = running.daemon
    assert running.wait_until(lambda: daemon.frames >= 3, timeout=60)

    fake_camera.unplug()
    assert running.wait_until(lambda: daemon.source.state == "degraded", timeout=10)
    status, body = api_get(running, "/health")
    assert status == 503
    assert "camera degraded" in body
    time.sleep(1.0)

    frames = daemon.frames
    fake_camera.plug()
    back = time.monotonic()
    assert running.wait_until(lambda: daemon.frames > frames, timeout=10)
    recovery = time.monotonic() - back
    text = daemon.metrics_text()
    running.stop()

    assert recovery < 5.0, f"frames flowed again only after {recovery:.1f} s"
    assert metric(text, "pokedge_camera_reopens_total") == 1
    assert any(kind == "status" and data.get("camera") == "degraded" for _, kind, data in running.events)
