"""Pushing frames through a configured HEF: the InferModel API and the classic vstreams API.

Both runners take C-contiguous uint8 frames [N, H, W, 3] and return the raw
output [N, ...] (float32 when HailoRT dequantizes, uint8 otherwise). They let
HailoRT exceptions through unchanged, so the backend can read their status.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from pokedge.backends.hailo_codec import QuantInfo
from pokedge.backends.hailo_options import HailoOptions
from pokedge.contract import ModelContract
from pokedge.errors import BackendError

_log = logging.getLogger(__name__)


class HailoRunner:
    """Interface of the two runners, as the backend uses it."""

    api: str
    input_shape: tuple[int, ...]
    input_quant: QuantInfo
    output_quant: QuantInfo
    output_is_float: bool

    def run(self, frames: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def has_infer_model(vdevice: Any) -> bool:
    """Check whether this HailoRT has the InferModel API (Python binding 4.18 and later)."""
    return callable(getattr(vdevice, "create_infer_model", None))


def create_infer_model(vdevice: Any, hef_path: Path, network_name: str = "") -> Any:
    """Call `VDevice.create_infer_model`, whose second parameter is `network_name` in 4.18 and `name` from 4.19."""
    if not network_name:
        return vdevice.create_infer_model(str(hef_path))
    parameters = inspect.signature(vdevice.create_infer_model).parameters
    keyword = "name" if "name" in parameters else "network_name"
    return vdevice.create_infer_model(str(hef_path), **{keyword: network_name})


class InferModelRunner(HailoRunner):
    """Runs a HEF through `create_infer_model`, `configure` and `run` or `run_async`."""

    api = "infer_model"

    def __init__(self, hailo_platform: Any, vdevice: Any, contract: ModelContract, options: HailoOptions):
        self._options = options
        self._stack = contextlib.ExitStack()
        FormatType = hailo_platform.FormatType

        model = create_infer_model(vdevice, contract.model_path, options.network_name)
        self._input_name = _pick_name(list(model.input_names), contract.input.name, "input", contract)
        self._output_name = _pick_name(list(model.output_names), contract.output.name, "output", contract)
        model_input = model.input(self._input_name)
        model_output = model.output(self._output_name)

        model_input.set_format_type(FormatType.UINT8)
        self.output_is_float = options.output_format == "float32"
        model_output.set_format_type(FormatType.FLOAT32 if self.output_is_float else FormatType.UINT8)
        if options.batch_size:
            model.set_batch_size(options.batch_size)

        self.input_shape = tuple(int(d) for d in model_input.shape)
        self.input_quant = QuantInfo.from_hailo(model_input.quant_infos[0])
        self.output_quant = QuantInfo.from_hailo(model_output.quant_infos[0])
        self._output_shape = tuple(int(d) for d in model_output.shape)
        self._output_dtype = np.float32 if self.output_is_float else np.uint8

        self._configured = self._stack.enter_context(model.configure())
        self._model = model
        if options.scheduler_priority is not None:
            self._configured.set_scheduler_priority(options.scheduler_priority)
        self._in_flight = max(1, min(options.frames_in_flight, int(self._configured.get_async_queue_size())))

    def run(self, frames: np.ndarray) -> np.ndarray:
        outputs = np.empty((len(frames), *self._output_shape), dtype=self._output_dtype)
        if self._options.mode == "sync":
            # One run call takes at most the async queue's size of frames, or HailoRT rejects it as full.
            for start in range(0, len(frames), self._in_flight):
                stop = min(start + self._in_flight, len(frames))
                bindings = [self._bind(frames[i], outputs[i]) for i in range(start, stop)]
                self._configured.wait_for_async_ready(timeout_ms=self._options.timeout_ms, frames_count=len(bindings))
                self._configured.run(bindings, self._options.timeout_ms)
            return outputs
        self._run_async(frames, outputs)
        return outputs

    def _bind(self, frame: np.ndarray, output: np.ndarray) -> Any:
        bindings = self._configured.create_bindings()
        bindings.input(self._input_name).set_buffer(frame)
        bindings.output(self._output_name).set_buffer(output)
        return bindings

    def _run_async(self, frames: np.ndarray, outputs: np.ndarray) -> None:
        """Submit one job per frame with at most `frames_in_flight` pending, then check every frame completed."""
        timeout_ms = self._options.timeout_ms
        completions: list[BaseException | None | bool] = [False] * len(frames)
        done = threading.Lock()
        pending: deque[tuple[int, Any]] = deque()

        def on_done(index: int, completion_info: Any) -> None:
            # Called by HailoRT on its own thread with the keyword completion_info.
            with done:
                completions[index] = completion_info.exception

        try:
            for index in range(len(frames)):
                while len(pending) >= self._in_flight:
                    _wait_job(*pending.popleft(), timeout_ms)
                self._configured.wait_for_async_ready(timeout_ms=timeout_ms, frames_count=1)
                bindings = self._bind(frames[index], outputs[index])
                job = self._configured.run_async(
                    [bindings], lambda completion_info, i=index: on_done(i, completion_info)
                )
                pending.append((index, job))
            while pending:
                _wait_job(*pending.popleft(), timeout_ms)
        except BaseException:
            _drain(pending)
            raise

        with done:
            for index, result in enumerate(completions):
                if result is False:
                    raise BackendError(f"HailoRT finished the batch without completing frame {index}")
                if result is not None:
                    raise result

    def close(self) -> None:
        configured = self._configured
        if configured is not None and callable(getattr(configured, "shutdown", None)):
            # Aborts jobs still queued, so HailoRT stops writing into their buffers.
            configured.shutdown()
        self._stack.close()
        self._configured = None
        self._model = None


def _wait_job(index: int, job: Any, timeout_ms: int) -> None:
    try:
        job.wait(timeout_ms)
    except Exception:
        _log.debug("Hailo async job for frame %d failed", index)
        raise


def _drain(pending: deque) -> None:
    # Jobs still in flight own their buffers; wait briefly so HailoRT stops writing before they are freed.
    while pending:
        index, job = pending.popleft()
        try:
            job.wait(100)
        except Exception as exc:  # the batch already failed; this only frees the buffers
            _log.debug("abandoned Hailo job for frame %d: %s", index, exc)


class VStreamsRunner(HailoRunner):
    """Runs a HEF through `VDevice.configure` and `InferVStreams`, for HailoRT without InferModel."""

    api = "vstreams"

    def __init__(self, hailo_platform: Any, vdevice: Any, contract: ModelContract, options: HailoOptions):
        self._stack = contextlib.ExitStack()
        FormatType = hailo_platform.FormatType

        hef = hailo_platform.HEF(str(contract.model_path))
        params = hailo_platform.ConfigureParams.create_from_hef(
            hef, interface=hailo_platform.HailoStreamInterface.PCIe
        )
        network_group = vdevice.configure(hef, params)[0]

        input_infos = {info.name: info for info in hef.get_input_vstream_infos()}
        output_infos = {info.name: info for info in hef.get_output_vstream_infos()}
        self._input_name = _pick_name(list(input_infos), contract.input.name, "input", contract)
        self._output_name = _pick_name(list(output_infos), contract.output.name, "output", contract)
        self.input_shape = tuple(int(d) for d in input_infos[self._input_name].shape)
        self.input_quant = QuantInfo.from_hailo(input_infos[self._input_name].quant_info)
        self.output_quant = QuantInfo.from_hailo(output_infos[self._output_name].quant_info)
        self.output_is_float = options.output_format == "float32"

        input_params = hailo_platform.InputVStreamParams.make(
            network_group, format_type=FormatType.UINT8, timeout_ms=options.timeout_ms
        )
        output_params = hailo_platform.OutputVStreamParams.make(
            network_group,
            format_type=FormatType.FLOAT32 if self.output_is_float else FormatType.UINT8,
            timeout_ms=options.timeout_ms,
        )
        if options.scheduler_priority is not None:
            network_group.set_scheduler_priority(options.scheduler_priority)
        self._pipeline = self._stack.enter_context(
            hailo_platform.InferVStreams(network_group, input_params, output_params)
        )
        self._network_group = network_group

    def run(self, frames: np.ndarray) -> np.ndarray:
        results = self._pipeline.infer({self._input_name: frames})
        return np.asarray(results[self._output_name])

    def close(self) -> None:
        self._stack.close()
        self._pipeline = None
        self._network_group = None


def _pick_name(names: list[str], wanted: str, kind: str, contract: ModelContract) -> str:
    """Choose the HEF input or output: the only one, else the one the contract names."""
    if len(names) == 1:
        return names[0]
    if wanted in names:
        return wanted
    raise BackendError(
        f"HEF {contract.model_path.name} has {kind}s {names}, and its contract names {kind} {wanted!r}; "
        f"set {kind}.name in {contract.source} to one of them"
    )
