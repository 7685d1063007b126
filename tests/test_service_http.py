"""The HTTP API over real loopback sockets: health, status, scans, events (SSE) and metrics."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time

import numpy as np
import pytest

from pokedge.service.events import EventBus
from pokedge.service.http import ApiServer
from pokedge.service.metrics import Registry
from pokedge.service.scanlog import ScanLog


class StubService:
    """The parts of the daemon the API reads."""

    def __init__(self, scanlog: ScanLog):
        self.bus = EventBus(history=10)
        self.scanlog = scanlog
        self.healthy = True
        self.registry = Registry()
        self.frames = self.registry.counter("pokedge_frames_total", "Frames run through the recognizer.")
        self.latency = self.registry.histogram("pokedge_stage_latency_seconds", "Stage time.", ["stage"])

    def health(self):
        if self.healthy:
            return True, {"status": "ok", "reasons": []}
        return False, {"status": "degraded", "reasons": ["camera degraded: stalled"]}

    def status(self):
        return {"state": "running", "fps": 9.5, "versions": {"model": "m:1"}, "vector": np.arange(3)}

    def metrics_text(self):
        return self.registry.render()


@pytest.fixture
def api(tmp_path):
    scanlog = ScanLog(tmp_path, min_free_bytes=0).open()
    service = StubService(scanlog)
    server = ApiServer(service, "127.0.0.1", 0, heartbeat=0.2)
    server.start()
    yield service, server
    server.stop()
    scanlog.close()


def get(server: ApiServer, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    host, port = server.address
    connection = http.client.HTTPConnection(host, port, timeout=5)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), body


def get_json(server: ApiServer, path: str) -> tuple[int, dict]:
    status, headers, body = get(server, path)
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


def add_scans(scanlog: ScanLog, count: int, state: str = "confirmed") -> None:
    for i in range(count):
        scanlog.add({"time": 1000.0 + i, "state": state, "card_id": f"base1-{i}", "name": f"Mon {i}",
                     "score": 0.9, "margin": 0.1, "track_id": i, "frame": i, "model": "m:1", "gallery": "g",
                     "version": "v1", "backend": "onnx", "alternatives": []},
                    np.zeros((64, 48, 3), np.uint8) if state != "confirmed" else None)
    assert scanlog.flush()


def test_listens_on_loopback_only(api):
    _, server = api
    assert server.address[0] == "127.0.0.1"


def test_health_ok_and_degraded(api):
    service, server = api
    assert get_json(server, "/health") == (200, {"status": "ok", "reasons": []})

    service.healthy = False
    status, body = get_json(server, "/health")
    assert status == 503
    assert body["reasons"] == ["camera degraded: stalled"]


def test_status_serializes_arrays(api):
    _, server = api
    status, body = get_json(server, "/status")
    assert status == 200
    assert body["state"] == "running"
    assert body["vector"] == [0, 1, 2]


def test_scans_paged(api):
    service, server = api
    add_scans(service.scanlog, 5)

    status, page = get_json(server, "/scans?limit=2")
    assert status == 200
    assert [s["card_id"] for s in page["scans"]] == ["base1-4", "base1-3"]
    assert page["total"] == 5
    assert page["next"] == "/scans?limit=2&offset=2"

    _, last = get_json(server, "/scans?limit=2&offset=4")
    assert [s["card_id"] for s in last["scans"]] == ["base1-0"]
    assert last["next"] is None


def test_scans_filtered_by_state(api):
    service, server = api
    add_scans(service.scanlog, 2)
    add_scans(service.scanlog, 1, state="unknown_card")

    _, page = get_json(server, "/scans?state=unknown_card")
    assert page["total"] == 1
    assert page["scans"][0]["state"] == "unknown_card"


@pytest.mark.parametrize("query, fragment", [
    ("limit=0", "limit must be between 1 and 500"),
    ("limit=many", "limit must be a whole number"),
    ("offset=-1", "offset must be at least 0"),
    ("state=happy", "state must be one of"),
])
def test_scans_bad_query(api, query, fragment):
    _, server = api
    status, body = get_json(server, f"/scans?{query}")
    assert status == 400
    assert fragment in body["error"]


def test_one_scan_and_its_image(api):
    service, server = api
    add_scans(service.scanlog, 1, state="unknown_card")
    scan_id = service.scanlog.scans()[0]["id"]

    status, scan = get_json(server, f"/scans/{scan_id}")
    assert status == 200
    assert scan["state"] == "unknown_card"

    status, headers, body = get(server, f"/scans/{scan_id}/image")
    assert status == 200
    assert headers["Content-Type"] == "image/jpeg"
    assert body[:2] == b"\xff\xd8"


def test_missing_scan_and_image(api):
    service, server = api
    add_scans(service.scanlog, 1)
    scan_id = service.scanlog.scans()[0]["id"]

    assert get_json(server, "/scans/999")[0] == 404
    status, body = get_json(server, f"/scans/{scan_id}/image")
    assert status == 404
    assert "no image" in body["error"]


def test_metrics_in_prometheus_format(api):
    service, server = api
    service.frames.inc(3)
    service.latency.observe(0.02, stage="detect")

    status, headers, body = get(server, "/metrics")
    text = body.decode()

    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE pokedge_frames_total counter" in text
    assert "pokedge_frames_total 3" in text
    assert 'pokedge_stage_latency_seconds_bucket{stage="detect",le="0.025"} 1' in text
    assert 'pokedge_stage_latency_seconds_bucket{stage="detect",le="0.01"} 0' in text
    assert 'pokedge_stage_latency_seconds_bucket{stage="detect",le="+Inf"} 1' in text
    assert 'pokedge_stage_latency_seconds_count{stage="detect"} 1' in text
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEInfNa]+$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), f"not a Prometheus sample line: {line!r}"


def test_unknown_path_and_method(api):
    _, server = api
    status, body = get_json(server, "/nothing")
    assert status == 404
    assert "/health" in body["endpoints"]

    host, port = server.address
    connection = http.client.HTTPConnection(host, port, timeout=5)
    connection.request("POST", "/scans", body=b"{}")
    response = connection.getresponse()
    assert response.status == 405
    assert response.getheader("Allow") == "GET"
    connection.close()


class SseClient:
    """Reads server-sent events from a raw socket."""

    def __init__(self, server: ApiServer, headers: str = ""):
        self.sock = socket.create_connection(server.address, timeout=5)
        self.sock.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        self.buffer = b""

    def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer and time.monotonic() < deadline:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        return self.buffer

    def events(self) -> list[tuple[str, str, dict]]:
        found = []
        for block in self.buffer.split(b"\n\n"):
            fields = dict(line.split(": ", 1) for line in block.decode().splitlines() if ": " in line
                          and not line.startswith(":"))
            if "event" in fields:
                found.append((fields["id"], fields["event"], json.loads(fields["data"])))
        return found

    def close(self):
        self.sock.close()


def test_events_stream(api):
    service, server = api
    client = SseClient(server)
    client.read_until(b"retry: 3000")
    assert b"text/event-stream" in client.buffer
    deadline = time.monotonic() + 5
    while service.bus.subscribers == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    service.bus.publish("confirmed", {"card_id": "base1-4", "score": 0.93})
    client.read_until(b"base1-4")
    client.read_until(b": keep-alive")

    assert client.events() == [("1", "confirmed", {"card_id": "base1-4", "score": 0.93})]
    assert b": keep-alive" in client.buffer
    client.close()


def test_events_replay_after_last_event_id(api):
    service, server = api
    for i in range(3):
        service.bus.publish("confirmed", {"card_id": f"base1-{i}"})

    client = SseClient(server, "Last-Event-ID: 1\r\n")
    client.read_until(b"base1-2")

    assert [data["card_id"] for _, _, data in client.events()] == ["base1-1", "base1-2"]
    client.close()


def test_events_rejects_bad_last_event_id(api):
    _, server = api
    status, _, body = get(server, "/events", {"Last-Event-ID": "latest"})
    assert status == 400
    assert b"event id number" in body


def test_stop_ends_event_streams(tmp_path):
    scanlog = ScanLog(tmp_path, min_free_bytes=0).open()
    service = StubService(scanlog)
    server = ApiServer(service, "127.0.0.1", 0, heartbeat=30.0)
    server.start()
    client = SseClient(server)
    client.read_until(b"retry: 3000")

    started = time.monotonic()
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(5)
    client.read_until(b"never", timeout=3)

    assert not stopper.is_alive()
    assert time.monotonic() - started < 3.0
    client.close()
    scanlog.close()


def test_port_in_use(api):
    _, server = api
    with pytest.raises(OSError):
        ApiServer(StubService(None), "127.0.0.1", server.address[1])
