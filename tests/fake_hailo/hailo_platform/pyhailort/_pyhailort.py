"""Test double of HailoRT's compiled extension `_pyhailort`.

It contains what the real extension does in C++: device presence and claims,
VDevice creation with its failure statuses, HEF parsing, the async job
queue, buffer checks, and the computation. Errors are raised as the raw
`HailoRTStatusException` with the status number in args[0]; the Python layer
in `pyhailort.py` wraps them as the real binding does.

Tests steer it through the module-level knobs below (or the FAKE_HAILO_*
environment variables read at import and by `reset()`).

A fake HEF is a JSON file (see tests/hailo_fixtures.py) that names an ONNX
model and the HEF's I/O facts. Outputs are computed by running that ONNX
model with INT8 fake-quantization: the uint8 input is dequantized with the
input's quant info (and, for a HEF compiled for raw pixels, normalized as
the compiled model would), and the float output is quantized to uint8 with
the output's quant info. Weights are not quantized, so parity figures cover
the I/O quantization error only.
"""

from __future__ import annotations

import enum
import fcntl
import json
import os
import threading
import time
from collections import deque
from datetime import timedelta
from pathlib import Path

import numpy as np

__version__ = os.environ.get("FAKE_HAILORT_VERSION", "4.23.0")
VERSION = tuple(int(part) for part in __version__.split(".")[:3])


class HailoRTStatusException(Exception):
    """Raw status error of the extension; args[0] is the status number as a string."""


_STATUS_NAMES = {
    0: "HAILO_SUCCESS",
    2: "HAILO_INVALID_ARGUMENT",
    4: "HAILO_TIMEOUT",
    6: "HAILO_INVALID_OPERATION",
    18: "HAILO_FW_CONTROL_FAILURE",
    25: "HAILO_INVALID_FRAME",
    26: "HAILO_INVALID_HEF",
    36: "HAILO_DRIVER_FAIL" if VERSION < (4, 20) else "HAILO_DRIVER_OPERATION_FAILED",
    61: "HAILO_NOT_FOUND",
    62: "HAILO_COMMUNICATION_CLOSED",
    63: "HAILO_STREAM_ABORT",
    64: "HAILO_DRIVER_NOT_INSTALLED",
    69: "HAILO_NETWORK_GROUP_NOT_ACTIVATED",
    73: "HAILO_DEVICE_IN_USE",
    74: "HAILO_OUT_OF_PHYSICAL_DEVICES",
    76: "HAILO_INVALID_DRIVER_VERSION",
    77: "HAILO_RPC_FAILED",
}
if VERSION >= (4, 20):
    _STATUS_NAMES[87] = "HAILO_DRIVER_TIMEOUT"
if VERSION >= (4, 21):
    _STATUS_NAMES[92] = "HAILO_HEF_NOT_SUPPORTED"
    _STATUS_NAMES[93] = "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE"


def get_status_message(code: int) -> str:
    return _STATUS_NAMES.get(int(code), "")


def _fail(code: int, detail: str = "") -> None:
    raise HailoRTStatusException(str(code), detail)


# ---------------------------------------------------------------- knobs

devices: list[tuple[str, str]] = []
open_status: int | None = None
open_failures: deque[int] = deque()
service_running = False
lock_dir: str | None = None
run_faults: deque[str] = deque()
async_queue_size = 4
frame_latency_s = 0.0
callback_threads: list[int] = []
max_in_flight_seen = 0
vdevices_created = 0


def reset() -> None:
    """Restore every knob to the FAKE_HAILO_* environment (defaults: one HAILO8L device, no faults)."""
    global devices, open_status, service_running, lock_dir, async_queue_size, frame_latency_s
    global max_in_flight_seen, vdevices_created
    spec = os.environ.get("FAKE_HAILO_DEVICES", "0000:01:00.0=HAILO8L")
    devices = [tuple(item.split("=", 1)) for item in spec.split(",") if item]
    status = os.environ.get("FAKE_HAILO_OPEN_STATUS")
    open_status = int(status) if status else None
    open_failures.clear()
    service_running = os.environ.get("FAKE_HAILO_SERVICE") == "1"
    lock_dir = os.environ.get("FAKE_HAILO_LOCK_DIR") or None
    run_faults.clear()
    async_queue_size = int(os.environ.get("FAKE_HAILO_QUEUE_SIZE", "4"))
    frame_latency_s = float(os.environ.get("FAKE_HAILO_LATENCY_S", "0"))
    callback_threads.clear()
    max_in_flight_seen = 0
    vdevices_created = 0


reset()


# ---------------------------------------------------------------- enums and small structs

class FormatType(enum.IntEnum):
    AUTO = 0
    UINT8 = 1
    UINT16 = 2
    FLOAT32 = 3


class FormatOrder(enum.IntEnum):
    AUTO = 0
    NHWC = 1
    NHCW = 2
    FCR = 3
    F8CR = 4
    NHW = 5
    NC = 6
    HAILO_NMS = 10
    HAILO_NMS_WITH_BYTE_MASK = 11


class SchedulingAlgorithm(enum.IntEnum):
    NONE = 0
    ROUND_ROBIN = 1


class StreamInterface(enum.IntEnum):
    PCIe = 0
    ETH = 1
    MIPI = 2
    INTEGRATED = 3


_ARCHITECTURES = {"HAILO8_A0": 0, "HAILO8": 1, "HAILO8L": 2, "HAILO15H": 3, "HAILO15M": 5, "HAILO10H": 6}
_ITEM_SIZES = {FormatType.UINT8: 1, FormatType.UINT16: 2, FormatType.FLOAT32: 4}


class Format:
    def __init__(self, type: FormatType, order: FormatOrder):
        self.type = type
        self.order = order


class QuantInfo:
    def __init__(self, qp_scale: float, qp_zp: float):
        self.qp_scale = float(qp_scale)
        self.qp_zp = float(qp_zp)
        self.limvals_min = (0 - self.qp_zp) * self.qp_scale
        self.limvals_max = (255 - self.qp_zp) * self.qp_scale


class VStreamInfo:
    def __init__(self, name: str, shape: tuple[int, ...], format: Format, quant_info: QuantInfo, network_name: str):
        self.name = name
        self.shape = shape
        self.format = format
        self.quant_info = quant_info
        self.network_name = network_name


def get_dtype(format_type: FormatType):
    return {FormatType.UINT8: np.uint8, FormatType.AUTO: np.uint8, FormatType.UINT16: np.uint16,
            FormatType.FLOAT32: np.float32}[FormatType(format_type)]


def get_format_data_bytes(format: Format) -> int:
    return _ITEM_SIZES.get(FormatType(format.type), 1)


# ---------------------------------------------------------------- HEF and the compute engine

class Hef:
    """A parsed fake HEF."""

    @staticmethod
    def create_from_file(path: str) -> "Hef":
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            _fail(61, f"HEF file {path} not found")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            _fail(26, f"{path} is not a HEF")
        if not isinstance(data, dict) or data.get("fake_hef") != 1:
            _fail(26, f"{path} is not a HEF")
        return Hef(data, Path(path))

    @staticmethod
    def create_from_buffer(buffer: bytes) -> "Hef":
        _fail(26, "the fake reads HEF files only")

    def __init__(self, data: dict, path: Path):
        self.path = path
        self.target = data["target"]
        self.network_group = data.get("network_group", "pokedge_embedder")
        self.encoding = data["input"]["encoding"]
        self.data = data
        fmt_in = Format(FormatType.UINT8, FormatOrder.NHWC)
        quant_in = QuantInfo(data["input"]["quant"]["scale"], data["input"]["quant"]["zp"])
        out_shape = tuple(data["output"]["shape"])
        fmt_out = Format(FormatType.UINT8, FormatOrder.NHWC if len(out_shape) == 3 else FormatOrder.NC)
        quant_out = QuantInfo(data["output"]["quant"]["scale"], data["output"]["quant"]["zp"])
        network = f"{self.network_group}/{self.network_group}"
        self.input_info = VStreamInfo(data["input"]["name"], tuple(data["input"]["shape"]), fmt_in, quant_in, network)
        self.output_info = VStreamInfo(data["output"]["name"], out_shape, fmt_out, quant_out, network)
        self.onnx_path = (path.parent / data["onnx_model"]).resolve()

    def get_network_group_names(self) -> list[str]:
        return [self.network_group]

    def get_input_vstream_infos(self, name: str = "") -> list[VStreamInfo]:
        return [self.input_info]

    def get_output_vstream_infos(self, name: str = "") -> list[VStreamInfo]:
        return [self.output_info]

    def check_runs_on(self, architecture: str) -> None:
        runnable = {"HAILO8": ("hailo8", "hailo8l"), "HAILO8_A0": ("hailo8", "hailo8l"), "HAILO8L": ("hailo8l",)}
        if self.target not in runnable.get(architecture, ()):
            # HailoRT 4.21 added a dedicated status; earlier versions report an invalid HEF.
            _fail(93 if VERSION >= (4, 21) else 26,
                  f"HEF compiled for {self.target} is not compatible with device {architecture}")


_engines: dict[str, "Engine"] = {}
_engines_lock = threading.Lock()


def engine_for(hef: Hef) -> "Engine":
    with _engines_lock:
        key = str(hef.path)
        if key not in _engines or _engines[key].mtime != hef.path.stat().st_mtime:
            _engines[key] = Engine(hef)
        return _engines[key]


class Engine:
    """Runs the HEF's ONNX model with INT8 fake-quantization of input and output."""

    def __init__(self, hef: Hef):
        import onnxruntime

        self.mtime = hef.path.stat().st_mtime
        spec = hef.data["input"]
        self.encoding = spec["encoding"]
        self.pixel_scale = np.float32(spec.get("scale", 1.0 / 255.0))
        self.mean = np.asarray(spec.get("mean", (0.485, 0.456, 0.406)), dtype=np.float32)
        self.std = np.asarray(spec.get("std", (0.229, 0.224, 0.225)), dtype=np.float32)
        self.input_quant = hef.input_info.quant_info
        self.output_quant = hef.output_info.quant_info
        self.output_shape = hef.output_info.shape
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(hef.onnx_path), options, providers=["CPUExecutionProvider"])
        node = self.session.get_inputs()[0]
        self.input_name = node.name
        self.fixed_batch = node.shape[0] if isinstance(node.shape[0], int) else None
        self.output_name = spec.get("onnx_output") or self.session.get_outputs()[0].name
        self.lock = threading.Lock()

    def compute(self, frames: np.ndarray) -> np.ndarray:
        """Map uint8 NHWC frames to quantized uint8 outputs [N, *output_shape]."""
        real = (frames.astype(np.float32) - np.float32(self.input_quant.qp_zp)) * np.float32(self.input_quant.qp_scale)
        if self.encoding == "raw_uint8":
            real = (real * self.pixel_scale - self.mean) / self.std
        tensor = np.ascontiguousarray(real.transpose(0, 3, 1, 2), dtype=np.float32)

        with self.lock:
            if self.fixed_batch == 1:
                rows = [self.session.run([self.output_name], {self.input_name: tensor[i:i + 1]})[0]
                        for i in range(len(tensor))]
                values = np.concatenate(rows, axis=0)
            else:
                values = self.session.run([self.output_name], {self.input_name: tensor})[0]

        values = values.reshape(len(frames), -1)
        quantized = np.rint(values / np.float32(self.output_quant.qp_scale) + np.float32(self.output_quant.qp_zp))
        quantized = np.clip(quantized, 0, 255).astype(np.uint8)
        return quantized.reshape(len(frames), *self.output_shape)

    def finish(self, quantized: np.ndarray, format_type: FormatType) -> np.ndarray:
        """Dequantize when the user asked for FLOAT32, as HailoRT does on the host."""
        if FormatType(format_type) == FormatType.FLOAT32:
            return ((quantized.astype(np.float32) - np.float32(self.output_quant.qp_zp))
                    * np.float32(self.output_quant.qp_scale))
        return quantized


# ---------------------------------------------------------------- devices and claims

_claims: dict[str, dict] = {}
_claims_lock = threading.Lock()


def _scan() -> list[str]:
    return [device_id for device_id, _ in devices]


def _architecture(device_id: str) -> str:
    for known_id, architecture in devices:
        if known_id == device_id:
            return architecture
    _fail(61, f"device {device_id} not found")


def _claim(device_id: str, group_id: str) -> bool:
    """Mark a device as used by this process's VDevice; False when it is taken."""
    with _claims_lock:
        claim = _claims.get(device_id)
        if claim is not None:
            if group_id == "UNIQUE" or claim["group"] != group_id:
                return False
            claim["count"] += 1
            return True

        handle = None
        if lock_dir:
            handle = open(Path(lock_dir) / f"{device_id.replace(':', '_')}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
        _claims[device_id] = {"group": group_id, "count": 1, "handle": handle}
        return True


def _unclaim(device_id: str) -> None:
    with _claims_lock:
        claim = _claims.get(device_id)
        if claim is None:
            return
        claim["count"] -= 1
        if claim["count"] <= 0:
            if claim["handle"] is not None:
                fcntl.flock(claim["handle"], fcntl.LOCK_UN)
                claim["handle"].close()
            del _claims[device_id]


class BoardInfo:
    def __init__(self, architecture: str):
        self.device_architecture = _ARCHITECTURES[architecture]
        self.protocol_version = 2
        self.fw_version_major, self.fw_version_minor, self.fw_version_revision = VERSION
        self.logger_version = 0
        self.board_name = "Hailo-8"
        self.is_release = True
        self.extended_context_switch_buffer = False
        self.serial_number = ""
        self.part_number = ""
        self.product_name = ""


class Device:
    @staticmethod
    def scan() -> list[str]:
        return _scan()

    @staticmethod
    def create(device_id: str) -> "Device":
        return Device(device_id, _architecture(device_id))

    def __init__(self, device_id: str, architecture: str):
        self.device_id = device_id
        self.architecture = architecture

    def identify(self) -> BoardInfo:
        return BoardInfo(self.architecture)

    def release(self) -> None:
        pass


class VDeviceParams:
    @staticmethod
    def default() -> "VDeviceParams":
        return VDeviceParams()

    def __init__(self):
        self.device_count = 1
        self.device_ids = None
        self.scheduling_algorithm = SchedulingAlgorithm.ROUND_ROBIN
        self.group_id = "UNIQUE"
        self.multi_process_service = False


class VDevice:
    """A claimed device; what `_pyhailort.VDevice.create` returns."""

    @staticmethod
    def create(params: VDeviceParams, device_ids: list[str]) -> "VDevice":
        global vdevices_created
        if open_failures:
            _fail(open_failures.popleft(), "injected VDevice failure")
        if open_status is not None:
            _fail(open_status, "injected VDevice failure")

        requested = list(device_ids or params.device_ids or [])
        available = _scan()
        if params.multi_process_service:
            if not service_running:
                _fail(77, "failed to connect to hailort_service at /tmp/hailort_uds.sock")
            if params.scheduling_algorithm == SchedulingAlgorithm.NONE:
                _fail(2, "the multi-process service needs a scheduler")
            if not available:
                _fail(74, "there are not enough free devices. requested: 1, found: 0")
            device_id = requested[0] if requested else available[0]
            vdevices_created += 1
            return VDevice(device_id, params, claimed=False)

        if requested:
            for device_id in requested:
                if device_id not in available:
                    _fail(61, f"device {device_id} not found")
                if not _claim(device_id, params.group_id):
                    _fail(73, f"device {device_id} is in use")
                vdevices_created += 1
                return VDevice(device_id, params, claimed=True)
        for device_id in available:
            if _claim(device_id, params.group_id):
                vdevices_created += 1
                return VDevice(device_id, params, claimed=True)
        _fail(74, "there are not enough free devices. requested: 1, found: 0")

    def __init__(self, device_id: str, params: VDeviceParams, claimed: bool):
        self.device_id = device_id
        self.architecture = _architecture(device_id)
        self.params = params
        self._claimed = claimed
        self._models: list[ConfiguredInferModel] = []
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        for model in self._models:
            model.shutdown()
        if self._claimed:
            _unclaim(self.device_id)

    def get_physical_devices_ids(self) -> list[str]:
        return [self.device_id]

    def _check_open(self) -> None:
        if self.released:
            _fail(6, "VDevice was released")

    def create_infer_model_from_file(self, path: str, name: str) -> "InferModel":
        self._check_open()
        hef = Hef.create_from_file(path)
        hef.check_runs_on(self.architecture)
        return InferModel(self, hef)

    def create_infer_model_from_buffer(self, buffer: bytes, name: str) -> "InferModel":
        Hef.create_from_buffer(buffer)

    def configure(self, hef: Hef, params: dict) -> list["ConfiguredNetwork"]:
        self._check_open()
        hef.check_runs_on(self.architecture)
        return [ConfiguredNetwork(self, hef)]

    @property
    def scheduled(self) -> bool:
        return self.params.scheduling_algorithm != SchedulingAlgorithm.NONE


# ---------------------------------------------------------------- InferModel

class InferStream:
    def __init__(self, info: VStreamInfo):
        self.info = info
        self.user_format = Format(info.format.type, info.format.order)

    def name(self) -> str:
        return self.info.name

    def shape(self) -> tuple[int, ...]:
        return self.info.shape

    def format(self) -> Format:
        return self.user_format

    def set_format_type(self, format_type: FormatType) -> None:
        self.user_format = Format(FormatType(format_type), self.user_format.order)

    def set_format_order(self, order: FormatOrder) -> None:
        self.user_format = Format(self.user_format.type, order)

    def get_quant_infos(self) -> list[QuantInfo]:
        return [self.info.quant_info]

    def is_nms(self) -> bool:
        return False

    def frame_size(self) -> int:
        format_type = self.user_format.type
        item = _ITEM_SIZES.get(FormatType(format_type), 1) if format_type != FormatType.AUTO else 1
        return int(np.prod(self.info.shape)) * item


class InferModel:
    def __init__(self, vdevice: VDevice, hef: Hef):
        self.vdevice = vdevice
        self.hef = hef
        self._input = InferStream(hef.input_info)
        self._output = InferStream(hef.output_info)
        self.batch_size = 0

    def get_input_names(self) -> list[str]:
        return [self._input.info.name]

    def get_output_names(self) -> list[str]:
        return [self._output.info.name]

    def inputs(self) -> list[InferStream]:
        return [self._input]

    def outputs(self) -> list[InferStream]:
        return [self._output]

    def input(self, name: str = "") -> InferStream:
        if name not in ("", self._input.info.name):
            _fail(61, f"no input named {name}")
        return self._input

    def output(self, name: str = "") -> InferStream:
        if name not in ("", self._output.info.name):
            _fail(61, f"no output named {name}")
        return self._output

    def set_batch_size(self, batch_size: int) -> None:
        self.batch_size = int(batch_size)

    def set_power_mode(self, power_mode) -> None:
        pass

    def configure(self) -> "ConfiguredInferModel":
        self.vdevice._check_open()
        return ConfiguredInferModel(self)


class BindingStream:
    def __init__(self, stream: InferStream):
        self.stream = stream
        self.buffer = None

    def set_buffer(self, buffer) -> None:
        # As in HailoRT, layout and size are checked when the job runs, not here.
        self.buffer = buffer

    def get_buffer(self):
        return self.buffer


class Bindings:
    def __init__(self, model: InferModel):
        self._input = BindingStream(InferStream(model._input.info))
        self._input.stream.user_format = model._input.user_format
        self._output = BindingStream(InferStream(model._output.info))
        self._output.stream.user_format = model._output.user_format
        self._input_name = model._input.info.name
        self._output_name = model._output.info.name

    def input(self, name: str = "") -> BindingStream:
        if name not in ("", self._input_name):
            _fail(61, f"no input named {name}")
        return self._input

    def output(self, name: str = "") -> BindingStream:
        if name not in ("", self._output_name):
            _fail(61, f"no output named {name}")
        return self._output


class Job:
    def __init__(self, bindings: list[Bindings], callback):
        self.bindings = bindings
        self.callback = callback
        self.done = threading.Event()
        self.status = None

    def wait(self, timeout: timedelta) -> None:
        if not self.done.wait(timeout.total_seconds()):
            _fail(4, "async job timed out")
        if self.status:
            _fail(self.status, "async job failed")


class ConfiguredInferModel:
    def __init__(self, model: InferModel):
        self.model = model
        self.vdevice = model.vdevice
        self.queue_size = async_queue_size
        self._queue: deque[Job] = deque()
        self._in_flight = 0
        self._hung: list[Job] = []
        self._cond = threading.Condition()
        self._stopped = False
        self.priority = None
        self._thread = threading.Thread(target=self._work, name="fake-hailort-infer", daemon=True)
        self._thread.start()
        self.vdevice._models.append(self)

    def create_bindings(self) -> Bindings:
        return Bindings(self.model)

    def get_async_queue_size(self) -> int:
        return self.queue_size

    def wait_for_async_ready(self, timeout: timedelta, frames_count: int) -> None:
        deadline = time.monotonic() + timeout.total_seconds()
        with self._cond:
            while frames_count > self.queue_size or self._in_flight + frames_count > self.queue_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopped:
                    _fail(4, "model not ready for async inference")
                self._cond.wait(remaining)

    def run_async(self, bindings: list[Bindings], callback) -> Job:
        global max_in_flight_seen
        if self._stopped or self.vdevice.released:
            _fail(63, "configured model was shut down")
        for binding in bindings:
            _check_buffer(binding._input)
            _check_buffer(binding._output)
        job = Job(bindings, callback)
        with self._cond:
            if self._in_flight + len(bindings) > self.queue_size:
                # NOTE: HailoRT reports a full queue with its own status; the double uses INVALID_OPERATION.
                _fail(6, "async queue is full; call wait_for_async_ready first")
            self._in_flight += len(bindings)
            max_in_flight_seen = max(max_in_flight_seen, self._in_flight)
            self._queue.append(job)
            self._cond.notify_all()
        return job

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                job = self._queue.popleft()
            fault = run_faults.popleft() if run_faults else None
            if fault == "hang":
                with self._cond:
                    self._hung.append(job)
                continue
            status = 63 if fault == "stream_abort" else 0
            if status == 0:
                try:
                    status = self._compute(job)
                except Exception:  # a broken model must not kill the worker; HailoRT reports a failed job
                    status = 6
            self._complete(job, status)

    def _compute(self, job: Job) -> int:
        engine = engine_for(self.model.hef)
        frames = np.stack([np.asarray(b._input.buffer).reshape(self.model.hef.input_info.shape) for b in job.bindings])
        if frame_latency_s:
            time.sleep(frame_latency_s * len(frames))
        outputs = engine.compute(frames)
        for binding, quantized in zip(job.bindings, outputs):
            out = binding._output
            values = engine.finish(quantized, out.stream.user_format.type)
            np.copyto(out.buffer, values.reshape(out.buffer.shape).astype(out.buffer.dtype, copy=False))
        return 0

    def _complete(self, job: Job, status: int) -> None:
        job.status = status
        callback_threads.append(threading.get_ident())
        try:
            job.callback(status)
        finally:
            with self._cond:
                self._in_flight -= len(job.bindings)
                self._cond.notify_all()
            job.done.set()

    def shutdown(self) -> None:
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            abandoned = list(self._queue) + self._hung
            self._queue.clear()
            self._hung.clear()
            self._cond.notify_all()
        for job in abandoned:
            self._complete(job, 63)

    def set_scheduler_priority(self, priority: int) -> None:
        if not self.vdevice.scheduled:
            _fail(6, "scheduler is disabled")
        self.priority = priority

    def set_scheduler_timeout(self, timeout: timedelta) -> None:
        if not self.vdevice.scheduled:
            _fail(6, "scheduler is disabled")

    def set_scheduler_threshold(self, threshold: int) -> None:
        if not self.vdevice.scheduled:
            _fail(6, "scheduler is disabled")

    def activate(self) -> None:
        if self.vdevice.scheduled:
            _fail(6, "activate is invalid while the scheduler is enabled")

    def deactivate(self) -> None:
        self.activate()


def _check_buffer(binding: BindingStream) -> None:
    buffer = binding.buffer
    if buffer is None:
        _fail(6, "buffer not set")
    array = np.asarray(buffer)
    if not array.flags.c_contiguous:
        _fail(6, "buffer is not C-contiguous")
    if array.nbytes != binding.stream.frame_size():
        _fail(6, f"buffer has {array.nbytes} bytes, frame size is {binding.stream.frame_size()}")


# ---------------------------------------------------------------- vstreams

class ConfiguredNetwork:
    def __init__(self, vdevice: VDevice, hef: Hef):
        self.vdevice = vdevice
        self.hef = hef
        self.priority = None

    def get_name(self) -> str:
        return self.hef.network_group

    def get_networks_names(self) -> list[str]:
        return [self.hef.input_info.network_name]

    def is_scheduled(self) -> bool:
        return self.vdevice.scheduled

    def get_input_vstream_infos(self, name: str = "") -> list[VStreamInfo]:
        return [self.hef.input_info]

    def get_output_vstream_infos(self, name: str = "") -> list[VStreamInfo]:
        return [self.hef.output_info]

    def get_sorted_output_names(self) -> list[str]:
        return [self.hef.output_info.name]

    def make_input_vstream_params(self, name, format_type, timeout_ms, queue_size) -> dict:
        return {self.hef.input_info.name: VStreamParams(format_type, self.hef.input_info.format.order, timeout_ms,
                                                        queue_size)}

    def make_output_vstream_params(self, name, format_type, timeout_ms, queue_size) -> dict:
        return {self.hef.output_info.name: VStreamParams(format_type, self.hef.output_info.format.order, timeout_ms,
                                                         queue_size)}

    def set_scheduler_priority(self, priority: int, name: str = "") -> None:
        if not self.vdevice.scheduled:
            _fail(6, "scheduler is disabled")
        self.priority = priority


class VStreamParams:
    def __init__(self, format_type, order, timeout_ms, queue_size):
        format_type = FormatType(format_type)
        self.user_buffer_format = Format(FormatType.UINT8 if format_type == FormatType.AUTO else format_type, order)
        self.timeout_ms = timeout_ms
        self.queue_size = queue_size


class InferVStreams:
    """The blocking vstreams pipeline."""

    def __init__(self, network: ConfiguredNetwork, input_params: dict, output_params: dict):
        if network.vdevice.released:
            _fail(6, "VDevice was released")
        self.network = network
        self.input_params = input_params
        self.output_params = output_params
        self.released = False

    def get_host_dtype(self, name: str):
        return get_dtype(self.input_params[name].user_buffer_format.type)

    def get_user_buffer_format(self, name: str) -> Format:
        return self.output_params[name].user_buffer_format

    def get_shape(self, name: str) -> tuple[int, ...]:
        return self.network.hef.output_info.shape

    def infer(self, input_data: dict, output_buffers: dict, batch_size: int) -> None:
        if self.released or self.network.vdevice.released:
            _fail(63, "pipeline released")
        hef = self.network.hef
        timeout_ms = self.input_params[hef.input_info.name].timeout_ms
        fault = run_faults.popleft() if run_faults else None
        if fault == "hang":
            time.sleep(timeout_ms / 1000.0)
            _fail(4, "vstream read timed out")
        if fault == "stream_abort":
            _fail(63, "stream aborted")

        frames = np.asarray(input_data[hef.input_info.name])
        if frames.dtype == np.float32:
            quant = hef.input_info.quant_info
            frames = np.clip(np.rint(frames / quant.qp_scale + quant.qp_zp), 0, 255).astype(np.uint8)
        if frame_latency_s:
            time.sleep(frame_latency_s * len(frames))
        engine = engine_for(hef)
        quantized = engine.compute(frames.reshape(len(frames), *hef.input_info.shape))
        name = hef.output_info.name
        values = engine.finish(quantized, self.output_params[name].user_buffer_format.type)
        np.copyto(output_buffers[name], values.astype(output_buffers[name].dtype, copy=False))

    def release(self) -> None:
        self.released = True


class ActivateNetworkGroupParams:
    @staticmethod
    def default() -> "ActivateNetworkGroupParams":
        return ActivateNetworkGroupParams()
