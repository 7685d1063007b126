"""sd_notify over a real unix datagram socket, and the watchdog interval."""

from __future__ import annotations

import logging
import os
import socket
import time

import pytest

from pokedge.service.notify import Notifier, Watchdog, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path):
    """A bound datagram socket standing in for systemd's NOTIFY_SOCKET; yields (address, receive)."""
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2.0)

    def receive() -> list[str]:
        return server.recv(4096).decode().split("\n")

    yield str(path), receive
    server.close()


def test_ready_with_status(notify_socket):
    address, receive = notify_socket
    notifier = Notifier(address)

    assert notifier.ready("running: picamera2:0 ok")
    assert receive() == ["READY=1", "STATUS=running: picamera2:0 ok"]
    notifier.close()


def test_each_message_kind(notify_socket):
    address, receive = notify_socket
    notifier = Notifier(address)

    notifier.watchdog()
    assert receive() == ["WATCHDOG=1"]
    notifier.status("camera degraded\nreopening")
    assert receive() == ["STATUS=camera degraded reopening"]
    notifier.stopping("stopping")
    assert receive() == ["STOPPING=1", "STATUS=stopping"]
    notifier.reloading()
    lines = receive()
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].split("=")[1]) > 0
    notifier.extend_timeout(30)
    assert receive() == ["EXTEND_TIMEOUT_USEC=30000000"]
    assert notifier.sent == 5
    notifier.close()


def test_abstract_socket_address():
    name = f"pokedge-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    server.settimeout(2.0)
    try:
        assert Notifier("@" + name).ready()
        assert server.recv(4096) == b"READY=1"
    finally:
        server.close()


def test_environment_variable_used(notify_socket, monkeypatch):
    address, receive = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)

    notifier = Notifier()
    assert notifier.enabled
    notifier.watchdog()
    assert receive() == ["WATCHDOG=1"]


def test_without_systemd_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.sent == 0


def test_missing_socket_logged_once(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="pokedge.service.notify")
    notifier = Notifier(str(tmp_path / "absent.sock"))

    assert notifier.watchdog() is False
    assert notifier.watchdog() is False

    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1


def test_relative_address_rejected(caplog):
    caplog.set_level(logging.ERROR, logger="pokedge.service.notify")
    assert Notifier("relative.sock").ready() is False
    assert "neither an absolute path" in caplog.text


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval(environ, expected):
    assert watchdog_interval(environ) == expected


def test_watchdog_pings_every_quarter_timeout(notify_socket):
    address, receive = notify_socket
    watchdog = Watchdog(Notifier(address), timeout=0.4)

    started = time.monotonic()
    while time.monotonic() - started < 0.35:
        watchdog.ping()
        time.sleep(0.01)

    assert 2 <= watchdog.pings <= 5  # about every 0.1 s over 0.35 s, not once per call
    for _ in range(watchdog.pings):
        assert receive() == ["WATCHDOG=1"]


def test_watchdog_off_sends_nothing(notify_socket):
    address, _ = notify_socket
    watchdog = Watchdog(Notifier(address), timeout=None)
    watchdog.ping()
    assert watchdog.pings == 0
