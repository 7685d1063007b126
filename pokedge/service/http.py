"""The local HTTP API: /health, /status, /scans, /events (server-sent events) and /metrics.

Served by the standard library's ThreadingHTTPServer, one thread per
connection, bound to 127.0.0.1 unless configured otherwise. The API has no
authentication, so binding it to another address exposes the scan log to
that network. Every response is JSON except /metrics (Prometheus text),
/events (text/event-stream) and scan images (JPEG).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from pokedge.service.events import Event, EventBus
from pokedge.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pokedge.service.scanlog import ScanLog
from pokedge.service.tracker import STATES

_log = logging.getLogger(__name__)

MAX_PAGE = 500
DEFAULT_PAGE = 50
SCAN_STATES = tuple(s for s in STATES if s not in ("no_card", "stabilizing"))
ENDPOINTS = {
    "/health": "200 when frames flow and the model is loaded, else 503 with the reasons",
    "/status": "camera, backend, model and gallery versions, fps, tracks and the last event",
    "/scans": "scan log, newest first; ?limit=50&offset=0&state=confirmed",
    "/scans/ID": "one scan; /scans/ID/image is its JPEG when it has one",
    "/events": "server-sent events: confirmed, unknown_card, low_confidence, left, status",
    "/metrics": "Prometheus text format",
}


class ServiceApi(Protocol):
    """The running service, as the HTTP API reads it."""

    bus: EventBus
    scanlog: ScanLog | None

    def health(self) -> tuple[bool, dict[str, Any]]: ...

    def status(self) -> dict[str, Any]: ...

    def metrics_text(self) -> str: ...


class ApiServer:
    """Runs the API on its own thread until `stop`."""

    def __init__(self, api: ServiceApi, host: str = "127.0.0.1", port: int = 8765, heartbeat: float = 15.0):
        self.api = api
        self.heartbeat = heartbeat
        self._httpd = _Server((host, port), _Handler)
        self._httpd.service = self
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()
        if host not in ("127.0.0.1", "localhost", "::1"):
            _log.warning("the HTTP API has no authentication and listens on %s; anyone who can reach this address "
                         "can read the scan log", host)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return host, port

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http-api", daemon=True)
        self._thread.start()
        _log.info("HTTP API listening on http://%s:%d", *self.address)

    def stop(self) -> None:
        """Stop accepting, end every event stream, and close the socket."""
        self.stopping.set()
        self.api.bus.close()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=2.0)
            self._thread = None
        self._httpd.server_close()
        _log.info("HTTP API stopped")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    service: ApiServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "pokedge"
    timeout = 30  # seconds a client may take to send its request or read a response chunk

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class names it so
        _log.debug("%s %s", self.address_string(), format % args)

    # -- dispatch ----------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = url.path.rstrip("/") or "/"
        try:
            self._route(path, query)
        except (BrokenPipeError, ConnectionResetError):
            _log.debug("client %s went away during %s", self.address_string(), path)
        except Exception:  # a handler bug must respond with 500, not end the connection thread silently
            _log.exception("HTTP %s failed", self.path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error; see the service log"})

    def do_POST(self) -> None:  # noqa: N802
        self._method_not_allowed()

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _method_not_allowed(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{self.command} is not supported; the API is read-only"},
                   headers={"Allow": "GET"})

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        api = self.server.service.api
        if path == "/":
            self._json(HTTPStatus.OK, {"endpoints": ENDPOINTS})
        elif path == "/health":
            ok, body = api.health()
            self._json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)
        elif path == "/status":
            self._json(HTTPStatus.OK, api.status())
        elif path == "/metrics":
            self._send(HTTPStatus.OK, api.metrics_text().encode("utf-8"), METRICS_CONTENT_TYPE)
        elif path == "/events":
            self._events(query)
        elif path == "/scans":
            self._scans(query)
        elif match := re.fullmatch(r"/scans/(\d+)(/image)?", path):
            self._scan(int(match.group(1)), bool(match.group(2)))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {path}", "endpoints": ENDPOINTS})

    # -- endpoints ---------------------------------------------------------------------------------

    def _scans(self, query: dict[str, list[str]]) -> None:
        scanlog = self.server.service.api.scanlog
        if scanlog is None:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the scan log is not open yet"})
            return
        try:
            limit = _int_param(query, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
            offset = _int_param(query, "offset", 0, 0, None)
            state = _state_param(query)
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return

        scans = scanlog.scans(limit, offset, state)
        total = scanlog.count(state)
        following = offset + len(scans)
        next_url = None
        if following < total:
            next_url = f"/scans?limit={limit}&offset={following}" + (f"&state={state}" if state else "")
        self._json(HTTPStatus.OK, {"scans": scans, "total": total, "limit": limit, "offset": offset, "next": next_url})

    def _scan(self, scan_id: int, image: bool) -> None:
        scanlog = self.server.service.api.scanlog
        scan = scanlog.get(scan_id) if scanlog else None
        if scan is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no scan with id {scan_id}"})
            return
        if not image:
            self._json(HTTPStatus.OK, scan)
            return
        path = scanlog.image_path(scan)
        if path is None or not path.is_file():
            self._json(HTTPStatus.NOT_FOUND, {"error": f"scan {scan_id} has no image (only unknown and "
                                                        f"low-confidence scans keep one)"})
            return
        self._send(HTTPStatus.OK, path.read_bytes(), "image/jpeg")

    def _events(self, query: dict[str, list[str]]) -> None:
        service = self.server.service
        last_id = self.headers.get("Last-Event-ID") or (query.get("last_event_id") or [None])[0]
        try:
            last_event_id = int(last_id) if last_id is not None else None
        except ValueError:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"Last-Event-ID must be an event id number, got {last_id!r}"})
            return

        subscription = service.api.bus.subscribe(last_event_id)
        if subscription is None:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE,
                       {"error": f"too many event streams open (max {service.api.bus.max_subscribers}) or the "
                                 f"service is stopping; retry later"}, headers={"Retry-After": "5"})
            return

        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            self._write(b"retry: 3000\n\n")
            self._stream(subscription)
        finally:
            subscription.close()

    def _stream(self, subscription) -> None:
        service = self.server.service
        while not service.stopping.is_set():
            event = subscription.get(timeout=service.heartbeat)
            if event is None:
                if subscription.closed:
                    return
                self._write(b": keep-alive\n\n")
                continue
            self._write(_sse(event))

    # -- responses ---------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def _json(self, status: HTTPStatus, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body, default=_json_default, indent=1) + "\n").encode("utf-8")
        self._send(status, data, "application/json", headers)

    def _send(self, status: HTTPStatus, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _sse(event: Event) -> bytes:
    data = json.dumps(event.data, default=_json_default, separators=(",", ":"))
    return f"id: {event.event_id}\nevent: {event.kind}\ndata: {data}\n\n".encode("utf-8")


def _int_param(query: dict[str, list[str]], name: str, default: int, minimum: int, maximum: int | None) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {values[0]!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def _state_param(query: dict[str, list[str]]) -> str | None:
    values = query.get("state")
    if not values:
        return None
    if values[0] not in SCAN_STATES:
        raise ValueError(f"state must be one of {', '.join(SCAN_STATES)}, got {values[0]!r}")
    return values[0]


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
