"""Test double of `hailo_platform.pyhailort.pyhailort`, the Python layer of HailoRT's binding.

It keeps the real layer's public names, signatures and error behaviour for
the parts pokedge uses, including what changes between versions:

- `VDevice.create_infer_model(hef_source, network_name="")` in 4.18,
  `(hef_source, name="")` from 4.19, absent before 4.18;
- status 36 raises `HailoRTPCIeDriverException` up to 4.19 and
  `HailoRTDriverOperationFailedException` from 4.20;
  `HailoCommunicationClosedException` exists from 4.20 and
  `HailoRTHEFNotCompatibleWithDevice` (status 93) from 4.21;
- statuses without their own class raise a plain `HailoRTException`
  "libhailort failed with error: 74 (HAILO_OUT_OF_PHYSICAL_DEVICES)",
  chained from the raw `_pyhailort.HailoRTStatusException`;
- `Device(id)` and `Device.scan()` are not wrapped, so they leak raw errors.
"""

from __future__ import annotations

import enum
import logging
import os
from collections import deque
from datetime import timedelta

import numpy

from hailo_platform.pyhailort import _pyhailort
from hailo_platform.pyhailort._pyhailort import FormatOrder, FormatType  # noqa: F401

VERSION = _pyhailort.VERSION
DEFAULT_VSTREAM_TIMEOUT_MS = 10000
DEFAULT_VSTREAM_QUEUE_SIZE = 2
HAILO_UNIQUE_VDEVICE_GROUP_ID = "UNIQUE"

_logger = logging.getLogger("hailo_platform")


class HailoRTException(Exception):
    pass


class HailoRTFirmwareControlFailedException(HailoRTException):
    pass


class HailoRTInvalidFrameException(HailoRTException):
    pass


class HailoRTTimeout(HailoRTException):
    pass


class HailoRTStreamAborted(HailoRTException):
    pass


class HailoRTStreamAbortedByUser(HailoRTException):
    pass


class HailoRTInvalidOperationException(HailoRTException):
    pass


class HailoRTInvalidArgumentException(HailoRTException):
    pass


class HailoRTNotFoundException(HailoRTException):
    pass


class HailoRTInvalidHEFException(HailoRTException):
    pass


class HailoRTNetworkGroupNotActivatedException(HailoRTException):
    pass


if VERSION < (4, 20):
    class HailoRTPCIeDriverException(HailoRTException):
        pass
else:
    class HailoRTDriverOperationFailedException(HailoRTException):
        pass

    class HailoCommunicationClosedException(HailoRTException):
        pass

if VERSION >= (4, 21):
    class HailoRTHEFNotCompatibleWithDevice(HailoRTException):
        pass


class HailoStatusInvalidValueException(Exception):
    pass


_CLASSES_BY_STATUS = {
    "HAILO_FW_CONTROL_FAILURE": ("HailoRTFirmwareControlFailedException", "libhailort control operation failed"),
    "HAILO_INVALID_FRAME": ("HailoRTInvalidFrameException", "An invalid frame was received"),
    "HAILO_TIMEOUT": ("HailoRTTimeout", "Received a timeout - hailort has failed because a timeout had occurred"),
    "HAILO_STREAM_ABORT": ("HailoRTStreamAborted", "Stream was aborted"),
    "HAILO_INVALID_OPERATION": ("HailoRTInvalidOperationException",
                                "Invalid operation. See hailort.log for more information"),
    "HAILO_INVALID_ARGUMENT": ("HailoRTInvalidArgumentException",
                               "Invalid argument. See hailort.log for more information"),
    "HAILO_NOT_FOUND": ("HailoRTNotFoundException", "Item not found. See hailort.log for more information"),
    "HAILO_INVALID_HEF": ("HailoRTInvalidHEFException", "Invalid HEF. See hailort.log for more information"),
    "HAILO_DRIVER_FAIL": ("HailoRTPCIeDriverException",
                          "PCIe driver failure. run 'dmesg | grep hailo' for more information"),
    "HAILO_DRIVER_OPERATION_FAILED": ("HailoRTDriverOperationFailedException",
                                      "Driver operation failed. run 'dmesg | grep hailo' for more information"),
    "HAILO_COMMUNICATION_CLOSED": ("HailoCommunicationClosedException", "Communication closed"),
    "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE": ("HailoRTHEFNotCompatibleWithDevice",
                                             "HEF file is not compatible with device. See hailort.log"),
    "HAILO_NETWORK_GROUP_NOT_ACTIVATED": ("HailoRTNetworkGroupNotActivatedException",
                                          "Network group is not activated"),
}


def get_status_message(status_code):
    status = _pyhailort.get_status_message(status_code)
    if status == "":
        raise HailoStatusInvalidValueException(f"Value {status_code} is not a valid status")
    return status


class ExceptionWrapper:
    def __enter__(self):
        pass

    def __exit__(self, exception_type, value, traceback):
        if value is not None and exception_type is _pyhailort.HailoRTStatusException:
            self._raise_indicative_status_exception(value)
        return False

    @staticmethod
    def create_exception_from_status(error_code):
        status = get_status_message(error_code)
        known = _CLASSES_BY_STATUS.get(status)
        if known is not None and known[0] in globals():
            return globals()[known[0]](known[1])
        return HailoRTException(f"libhailort failed with error: {error_code} ({status})")

    def _raise_indicative_status_exception(self, raw):
        raise self.create_exception_from_status(int(raw.args[0])) from raw


class HailoSchedulingAlgorithm(enum.IntEnum):
    NONE = 0
    ROUND_ROBIN = 1


class HailoStreamInterface(enum.IntEnum):
    PCIe = 0
    ETH = 1
    MIPI = 2
    INTEGRATED = 3


class DeviceArchitectureTypes(enum.IntEnum):
    HAILO8_A0 = 0
    HAILO8 = 1
    HAILO8L = 2
    HAILO15H = 3
    PLUTO = 4
    HAILO15M = 5
    HAILO10H = 6

    def __str__(self):
        return self.name


class BoardInformation:
    def __init__(self, raw):
        self.protocol_version = raw.protocol_version
        self.board_name = raw.board_name
        self.is_release = raw.is_release
        self.device_architecture = DeviceArchitectureTypes(raw.device_architecture)
        self.serial_number = raw.serial_number
        self.part_number = raw.part_number
        self.product_name = raw.product_name


class Control:
    def __init__(self, raw_device):
        self._device = raw_device

    def identify(self):
        with ExceptionWrapper():
            return BoardInformation(self._device.identify())


class Device:
    """Hailo device object, for control only (inference uses VDevice)."""

    @classmethod
    def scan(cls):
        return _pyhailort.Device.scan()

    def __init__(self, device_id=None):
        self._device = None
        if device_id is None:
            device_ids = Device.scan()
            if len(device_ids) == 0:
                raise HailoRTException("HailoRT device not found in the system")
            device_id = device_ids[0]
        self._device_id = device_id
        self._device = _pyhailort.Device.create(device_id)
        self._creation_pid = os.getpid()
        self._control_object = Control(self._device)

    @property
    def device_id(self):
        return self._device_id

    @property
    def control(self):
        return self._control_object

    def release(self):
        if self._device is not None:
            with ExceptionWrapper():
                self._device.release()
            self._device = None

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.release()
        return False


class HEF:
    def __init__(self, hef_source):
        with ExceptionWrapper():
            if isinstance(hef_source, str):
                self._hef = _pyhailort.Hef.create_from_file(hef_source)
                self._path = hef_source
            elif isinstance(hef_source, bytes):
                self._hef = _pyhailort.Hef.create_from_buffer(hef_source)
                self._path = None
            else:
                raise ValueError("HEF can only be created from a file path (str) or a buffer (bytes)")

    @property
    def path(self):
        return self._path

    def get_network_group_names(self):
        with ExceptionWrapper():
            return self._hef.get_network_group_names()

    def get_input_vstream_infos(self, name=None):
        return self._hef.get_input_vstream_infos(name or "")

    def get_output_vstream_infos(self, name=None):
        return self._hef.get_output_vstream_infos(name or "")


class ConfigureParams:
    @staticmethod
    def create_from_hef(hef, interface):
        with ExceptionWrapper():
            return {name: {"interface": interface} for name in hef.get_network_group_names()}


class AsyncInferCompletionInfo:
    def __init__(self, exception):
        self._exception = exception

    @property
    def exception(self):
        return self._exception


class AsyncInferJob:
    def __init__(self, job):
        self._job = job

    def wait(self, timeout_ms):
        with ExceptionWrapper():
            self._job.wait(timedelta(milliseconds=timeout_ms))


class InferModel:
    class InferStream:
        def __init__(self, infer_stream):
            self._infer_stream = infer_stream

        @property
        def name(self):
            with ExceptionWrapper():
                return self._infer_stream.name()

        @property
        def shape(self):
            with ExceptionWrapper():
                return self._infer_stream.shape()

        @property
        def format(self):
            with ExceptionWrapper():
                return self._infer_stream.format()

        def set_format_type(self, type):
            with ExceptionWrapper():
                self._infer_stream.set_format_type(type)

        def set_format_order(self, order):
            with ExceptionWrapper():
                self._infer_stream.set_format_order(order)

        @property
        def quant_infos(self):
            with ExceptionWrapper():
                return self._infer_stream.get_quant_infos()

        @property
        def is_nms(self):
            return self._infer_stream.is_nms()

    def __init__(self, infer_model, hef_path):
        self._infer_model = infer_model
        self._hef_path = hef_path
        self._hef = None

    @property
    def hef(self):
        if not self._hef:
            self._hef = HEF(self._hef_path)
        return self._hef

    def set_batch_size(self, batch_size):
        with ExceptionWrapper():
            self._infer_model.set_batch_size(batch_size)

    def configure(self):
        with ExceptionWrapper():
            return ConfiguredInferModel(self._infer_model.configure(), self)

    @property
    def input_names(self):
        return self._infer_model.get_input_names()

    @property
    def output_names(self):
        return self._infer_model.get_output_names()

    @property
    def inputs(self):
        return [self.InferStream(s) for s in self._infer_model.inputs()]

    @property
    def outputs(self):
        return [self.InferStream(s) for s in self._infer_model.outputs()]

    def input(self, name=""):
        with ExceptionWrapper():
            return self.InferStream(self._infer_model.input(name))

    def output(self, name=""):
        with ExceptionWrapper():
            return self.InferStream(self._infer_model.output(name))


class ConfiguredInferModel:
    """A configured model; must not be passed to another process."""

    class Bindings:
        class InferStream:
            def __init__(self, infer_stream):
                self._infer_stream = infer_stream
                self._buffer = None

            def set_buffer(self, buffer):
                with ExceptionWrapper():
                    self._infer_stream.set_buffer(buffer)
                self._buffer = buffer

            def get_buffer(self, tf_format=False):
                return self._buffer

        def __init__(self, bindings, input_names, output_names):
            self._bindings = bindings
            self._inputs = {}
            self._outputs = {}
            self._input_names = input_names
            self._output_names = output_names

        def input(self, name=""):
            if name == "" and len(self._input_names) == 1:
                name = self._input_names[0]
            if name not in self._inputs:
                with ExceptionWrapper():
                    self._inputs[name] = self.InferStream(self._bindings.input(name))
            return self._inputs[name]

        def output(self, name=""):
            if name == "" and len(self._output_names) == 1:
                name = self._output_names[0]
            if name not in self._outputs:
                with ExceptionWrapper():
                    self._outputs[name] = self.InferStream(self._bindings.output(name))
            return self._outputs[name]

        def get(self):
            return self._bindings

    def __init__(self, configured_infer_model, infer_model):
        self._configured_infer_model = configured_infer_model
        self._input_names = infer_model.input_names
        self._output_names = infer_model.output_names
        self._buffer_guards = deque()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self._configured_infer_model = None

    def create_bindings(self, input_buffers=None, output_buffers=None):
        with ExceptionWrapper():
            raw = self._configured_infer_model.create_bindings()
        bindings = self.Bindings(raw, self._input_names, self._output_names)
        for name, buffer in (input_buffers or {}).items():
            bindings.input(name).set_buffer(buffer)
        for name, buffer in (output_buffers or {}).items():
            bindings.output(name).set_buffer(buffer)
        return bindings

    def wait_for_async_ready(self, timeout_ms=1000, frames_count=1):
        with ExceptionWrapper():
            self._configured_infer_model.wait_for_async_ready(timedelta(milliseconds=timeout_ms), frames_count)

    def run(self, bindings, timeout):
        with ExceptionWrapper():
            job = self.run_async(bindings)
            job.wait(timeout)

    def run_async(self, bindings, callback=None):
        buffers = []
        for b in bindings:
            for name in self._input_names:
                buffers.append(b.input(name).get_buffer())
            for name in self._output_names:
                buffers.append(b.output(name).get_buffer(None))
        self._buffer_guards.append(buffers)

        def callback_wrapper(error_code):
            exception = ExceptionWrapper.create_exception_from_status(error_code) if error_code else None
            if callback:
                callback(completion_info=AsyncInferCompletionInfo(exception))
            self._buffer_guards.popleft()

        with ExceptionWrapper():
            try:
                raw_job = self._configured_infer_model.run_async([b.get() for b in bindings], callback_wrapper)
            except _pyhailort.HailoRTStatusException:
                self._buffer_guards.pop()
                raise
        return AsyncInferJob(raw_job)

    def get_async_queue_size(self):
        with ExceptionWrapper():
            return self._configured_infer_model.get_async_queue_size()

    def set_scheduler_priority(self, priority):
        with ExceptionWrapper():
            self._configured_infer_model.set_scheduler_priority(priority)

    def set_scheduler_timeout(self, timeout_ms):
        with ExceptionWrapper():
            self._configured_infer_model.set_scheduler_timeout(timedelta(milliseconds=timeout_ms))

    def set_scheduler_threshold(self, threshold):
        with ExceptionWrapper():
            self._configured_infer_model.set_scheduler_threshold(threshold)

    def activate(self):
        with ExceptionWrapper():
            self._configured_infer_model.activate()

    def deactivate(self):
        with ExceptionWrapper():
            self._configured_infer_model.deactivate()

    def shutdown(self):
        with ExceptionWrapper():
            self._configured_infer_model.shutdown()


class EmptyContextManager:
    def __enter__(self):
        pass

    def __exit__(self, *args):
        pass


class ConfiguredNetwork:
    def __init__(self, configured_network):
        self._configured_network = configured_network

    @property
    def name(self):
        return self._configured_network.get_name()

    def get_networks_names(self):
        return self._configured_network.get_networks_names()

    def activate(self, network_group_params=None):
        if self._configured_network.is_scheduled():
            _logger.warning("Calls to `activate()` when working with scheduler are deprecated!")
            return EmptyContextManager()
        return EmptyContextManager()

    @staticmethod
    def create_params():
        return _pyhailort.ActivateNetworkGroupParams.default()

    def get_input_vstream_infos(self, network_name=None):
        return self._configured_network.get_input_vstream_infos(network_name or "")

    def get_output_vstream_infos(self, network_name=None):
        return self._configured_network.get_output_vstream_infos(network_name or "")

    def get_sorted_output_names(self):
        return self._configured_network.get_sorted_output_names()

    def set_scheduler_priority(self, priority):
        with ExceptionWrapper():
            return self._configured_network.set_scheduler_priority(priority, "")


class InputVStreamParams:
    @staticmethod
    def make(configured_network, quantized=None, format_type=None, timeout_ms=None, queue_size=None,
             network_name=None):
        format_type = FormatType.AUTO if format_type is None else format_type
        timeout_ms = DEFAULT_VSTREAM_TIMEOUT_MS if timeout_ms is None else timeout_ms
        queue_size = DEFAULT_VSTREAM_QUEUE_SIZE if queue_size is None else queue_size
        with ExceptionWrapper():
            return configured_network._configured_network.make_input_vstream_params(
                network_name or "", format_type, timeout_ms, queue_size)


class OutputVStreamParams:
    @staticmethod
    def make(configured_network, quantized=None, format_type=None, timeout_ms=None, queue_size=None,
             network_name=None):
        format_type = FormatType.AUTO if format_type is None else format_type
        timeout_ms = DEFAULT_VSTREAM_TIMEOUT_MS if timeout_ms is None else timeout_ms
        queue_size = DEFAULT_VSTREAM_QUEUE_SIZE if queue_size is None else queue_size
        with ExceptionWrapper():
            return configured_network._configured_network.make_output_vstream_params(
                network_name or "", format_type, timeout_ms, queue_size)


class InferVStreams:
    """Blocking inference pipeline, used as a context manager."""

    def __init__(self, configured_net_group, input_vstreams_params, output_vstreams_params, tf_nms_format=False):
        self._configured_net_group = configured_net_group
        self._input_vstreams_params = input_vstreams_params
        self._output_vstreams_params = output_vstreams_params
        self._infer_pipeline = None

    def __enter__(self):
        with ExceptionWrapper():
            self._infer_pipeline = _pyhailort.InferVStreams(
                self._configured_net_group._configured_network, self._input_vstreams_params,
                self._output_vstreams_params)
        return self

    def infer(self, input_data):
        if not isinstance(input_data, dict):
            infos = self._configured_net_group.get_input_vstream_infos()
            input_data = {infos[0].name: input_data}
        input_data = dict(input_data)
        batch_size = next(iter(input_data.values())).shape[0]

        for name in input_data:
            expected = self._infer_pipeline.get_host_dtype(name)
            if input_data[name].dtype != expected:
                _logger.warning("Given input data dtype (%s) is different than inferred dtype (%s). "
                                "conversion for every frame will reduce performance", input_data[name].dtype, expected)
                input_data[name] = input_data[name].astype(expected)
            item_size = _pyhailort.get_format_data_bytes(self._input_vstreams_params[name].user_buffer_format)
            if input_data[name].dtype.itemsize != item_size:
                raise HailoRTException(f"{name} numpy array item size is {input_data[name].dtype.itemsize}, "
                                       f"not {item_size}")
            if not input_data[name].flags.c_contiguous:
                _logger.warning("Converting %s numpy array to be C_CONTIGUOUS", name)
                input_data[name] = numpy.asarray(input_data[name], order="C")

        output_buffers = {}
        for name in self._output_vstreams_params:
            shape = self._infer_pipeline.get_shape(name)
            dtype = _pyhailort.get_dtype(self._infer_pipeline.get_user_buffer_format(name).type)
            output_buffers[name] = numpy.empty([batch_size] + list(shape), dtype=dtype)

        with ExceptionWrapper():
            self._infer_pipeline.infer(input_data, output_buffers, batch_size)
        return output_buffers

    def __exit__(self, *args):
        self._infer_pipeline.release()
        return False


class VDevice:
    """Hailo virtual device."""

    def __init__(self, params=None, *, device_ids=None):
        self._vdevice = None
        self._params = params
        self._device_ids = device_ids
        self._creation_pid = os.getpid()
        self._loaded_network_groups = []
        if self._params is None:
            self._params = VDevice.create_params()
        with ExceptionWrapper():
            self._vdevice = _pyhailort.VDevice.create(self._params, [] if device_ids is None else device_ids)

    @staticmethod
    def create_params():
        with ExceptionWrapper():
            return _pyhailort.VDeviceParams.default()

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.release()
        return False

    def __del__(self):
        self.release()

    def release(self):
        if self._vdevice is not None:
            self._vdevice.release()
            self._vdevice = None

    def configure(self, hef, configure_params_by_name={}):
        if self._creation_pid != os.getpid():
            raise HailoRTException("VDevice can only be configured from the process it was created in.")
        with ExceptionWrapper():
            handles = self._vdevice.configure(hef._hef, configure_params_by_name)
        networks = [ConfiguredNetwork(handle) for handle in handles]
        self._loaded_network_groups.extend(networks)
        return networks

    def get_physical_devices_ids(self):
        with ExceptionWrapper():
            return self._vdevice.get_physical_devices_ids()

    def get_physical_devices(self):
        return [Device(device_id) for device_id in self.get_physical_devices_ids()]

    def _create_infer_model(self, hef_source, network_name):
        if os.getpid() != self._creation_pid:
            raise HailoRTException("InferModel can be created only from the process VDevice was created in.")
        if self._vdevice is None:
            raise HailoRTException("VDevice was released")
        with ExceptionWrapper():
            if type(hef_source) is bytes:
                raw = self._vdevice.create_infer_model_from_buffer(hef_source, network_name)
            else:
                raw = self._vdevice.create_infer_model_from_file(hef_source, network_name)
        return InferModel(raw, hef_source)

    if VERSION >= (4, 19):
        def create_infer_model(self, hef_source, name=""):
            """Create an InferModel from a HEF path or buffer (4.19 and later name the second argument `name`)."""
            return self._create_infer_model(hef_source, name)
    elif VERSION >= (4, 18):
        def create_infer_model(self, hef_source, network_name=""):
            """Create an InferModel from a HEF path or buffer (4.18 names the second argument `network_name`)."""
            return self._create_infer_model(hef_source, network_name)
