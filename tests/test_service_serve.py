"""`pokedge serve` as systemd runs it (a real process, sd_notify, signals) and `pokedge scan --camera`."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from pokedge import cli
from service_support import REPO, damaged_bytes, small_video, stack_video  # noqa: F401 - pytest fixtures


class NotifyListener:
    """Collects sd_notify datagrams on a real unix socket, with the time each arrived."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic(), data.decode().split("\n")))

    def wait_for(self, line: str, after: float = 0.0, timeout: float = 60.0) -> float:
        """Return the arrival time of the first message after `after` containing `line`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, lines in list(self.messages):
                if when >= after and line in lines:
                    return when
            time.sleep(0.05)
        raise AssertionError(f"no {line} within {timeout} s; got {[m for _, m in self.messages]}")

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(port: int, path: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", path)
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    return response.status, body


def test_serve_speaks_the_systemd_protocol(small_video, tiny_contract, tiny_gallery, tmp_path):
    listener = NotifyListener(tmp_path / "notify.sock")
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "2000000", "PYTHONUNBUFFERED": "1"}
    env.pop("WATCHDOG_PID", None)
    command = [sys.executable, "-m", "pokedge", "serve", "--source", f"file:{small_video.path}", "--loop",
               "--as-fast-as-possible", "--http", f"127.0.0.1:{port}", "--model", str(tiny_contract),
               "--gallery", str(tiny_gallery), "--backend", "onnx", "--threads", "1",
               "--data-dir", str(tmp_path / "data")]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        ready = listener.wait_for("READY=1")
        listener.wait_for("WATCHDOG=1", after=ready, timeout=10)
        status, health = http_get(port, "/health")
        assert status == 200, health

        process.send_signal(signal.SIGHUP)
        hup = time.monotonic()
        reloading = listener.wait_for("RELOADING=1", after=hup, timeout=10)
        listener.wait_for("READY=1", after=reloading, timeout=60)
        _, info = http_get(port, "/status")
        assert info["reload"]["reloads"] == 1
        assert info["source"]["reopens"] == 0

        deadline = time.monotonic() + 60
        while "scan {" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)

        process.send_signal(signal.SIGTERM)
        term = time.monotonic()
        returncode = process.wait(timeout=10)
        stopped_in = time.monotonic() - term
        listener.wait_for("STOPPING=1", after=term, timeout=1)
    finally:
        if process.poll() is None:
            process.kill()
        listener.close()

    log = log_path.read_text()
    assert returncode == 0, log
    assert stopped_in < 5.0, f"SIGTERM took {stopped_in:.1f} s"
    assert "received SIGTERM" in log
    assert "reloaded: model tests-tiny-pool16:1" in log
    scan_lines = [line for line in log.splitlines() if " scan {" in line]
    assert scan_lines, "every decision goes to the journal as one line"
    record = json.loads(scan_lines[0].split(" scan ", 1)[1])
    assert record["state"] in ("confirmed", "unknown_card", "low_confidence")
    assert record["model"] == "tests-tiny-pool16:1"
    assert any(line.startswith("STATUS=running") for _, lines in listener.messages for line in lines)


def test_serve_rejects_bad_config(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text('[serve]\nsource = "picamera2"\nconfirm = 3\n')

    assert cli.main(["serve", "--config", str(config)]) == 1
    error = capsys.readouterr().err
    assert "unknown key [serve] confirm" in error
    assert str(config) in error


def test_scan_camera_prints_confirmed_card(stack_video, tiny_contract, tiny_gallery, capsys):
    status = cli.main(["scan", "--camera", f"file:{stack_video.path}", "--json", "--timeout", "30",
                       "--model", str(tiny_contract), "--gallery", str(tiny_gallery), "--backend", "onnx",
                       "--threads", "1"])
    out = capsys.readouterr().out

    assert status == 0
    report = json.loads(out)
    assert report["state"] == "confirmed"
    assert report["cards"][0]["card_id"] == stack_video.segments[0].card_id
    assert report["cards"][0]["status"] == "match"
    assert report["image"].startswith("file:")
    assert report["backend"] == "onnx"


def test_scan_camera_times_out_without_card(tmp_path, tiny_contract, tiny_gallery, capsys):
    video = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (160, 120))
    for _ in range(10):
        writer.write(np.full((120, 160, 3), 90, np.uint8))
    writer.release()

    status = cli.main(["scan", "--camera", f"file:{video}", "--timeout", "5", "--model", str(tiny_contract),
                       "--gallery", str(tiny_gallery), "--backend", "onnx"])

    assert status == 1
    assert "no card confirmed within 5 s" in capsys.readouterr().err


def test_scan_camera_and_images_exclusive(tmp_path, capsys):
    assert cli.main(["scan", "--camera", "picamera2", str(tmp_path / "a.jpg")]) == 1
    assert "either --camera or image files" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["webcam"])
def test_scan_camera_bad_source(spec, capsys):
    assert cli.main(["scan", "--camera", spec]) == 1
    assert "unknown source" in capsys.readouterr().err


PICAMERA2_INSTALLED = importlib.util.find_spec("picamera2") is not None


def run_pokedge(*args: str, tiny_contract, tiny_gallery, data_dir) -> tuple[subprocess.CompletedProcess, float]:
    """Run pokedge with the tiny model in a child process and return the result and its duration in seconds."""
    env = {key: value for key, value in os.environ.items() if key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    command = [sys.executable, "-m", "pokedge", *args, "--model", str(tiny_contract), "--gallery", str(tiny_gallery),
               "--backend", "onnx", "--threads", "1", "--data-dir", str(data_dir)]
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    return result, time.monotonic() - started


@pytest.mark.skipif(PICAMERA2_INSTALLED, reason="picamera2 is installed here, so it cannot be missing")
@pytest.mark.parametrize("command", [("scan", "--camera", "--timeout", "20"),
                                     ("serve", "--source", "picamera2", "--http", "127.0.0.1:{port}")])
def test_missing_picamera2_fails_at_once(command, tiny_contract, tiny_gallery, tmp_path):
    args = [arg.format(port=free_port()) for arg in command]
    result, seconds = run_pokedge(*args, tiny_contract=tiny_contract, tiny_gallery=tiny_gallery,
                                  data_dir=tmp_path / "data")

    assert result.returncode == 1, result.stderr
    assert seconds < 10.0, f"{command[0]} took {seconds:.1f} s to report the missing package"
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if f"pokedge {command[0]}: error:" in line]
    assert len(errors) == 1, result.stderr
    assert "picamera2 is not installed" in errors[0]
    assert "sudo apt install python3-picamera2" in errors[0]
    assert "--system-site-packages" in errors[0]
    assert "opencv:N" in errors[0]
    assert "--image" in errors[0]


@pytest.mark.parametrize("name, kind, fragment", [
    ("noise.jpg", "noise", "cannot be decoded as an image or video"),
    ("half.jpg", "half", "JPEG data is truncated"),
    ("header_only.jpg", "header", "cannot be decoded as an image or video"),
])
def test_serve_rejects_damaged_file(name, kind, fragment, tiny_contract, tiny_gallery, tmp_path):
    path = tmp_path / name
    path.write_bytes(damaged_bytes(kind))

    result, _ = run_pokedge("serve", "--source", f"file:{path}", "--http", f"127.0.0.1:{free_port()}",
                            tiny_contract=tiny_contract, tiny_gallery=tiny_gallery, data_dir=tmp_path / "data")

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"pokedge serve: error: source file:{path}: ")
    assert fragment in errors[0]
