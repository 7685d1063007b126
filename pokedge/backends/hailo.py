"""HailoRT backend: card embeddings from an INT8 HEF on a Hailo-8L (or Hailo-8).

`hailo_platform` is imported when a backend opens, never at module import, so
pokedge runs on machines without HailoRT. A timeout or stream error while
running is retried with exponential backoff after re-creating the VDevice.
After `max_attempts` failed attempts the batch raises HailoRunError, which the
fallback wrapper turns into a switch to ONNX Runtime.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from pokedge.backends import hailo_device
from pokedge.backends.base import check_images, l2_normalize
from pokedge.backends.hailo_codec import HailoCodec
from pokedge.backends.hailo_errors import HailoRunError, HailoUnavailable, failure_from_exception
from pokedge.backends.hailo_options import HailoOptions, hailo_options_from_dict
from pokedge.backends.hailo_runners import HailoRunner, InferModelRunner, VStreamsRunner, has_infer_model
from pokedge.contract import ModelContract
from pokedge.errors import BackendError

_log = logging.getLogger(__name__)

NAME = "hailo"


class HailoBackend:
    """Runs a HEF on the process's shared VDevice; see the module docstring for the retry rules."""

    name = NAME

    def __init__(self, contract: ModelContract, options: HailoOptions | dict | None = None):
        if contract.format != "hef":
            raise BackendError(f"the Hailo backend runs HEF models; contract {contract.source} has format {contract.format!r}")
        if not contract.model_path.is_file():
            raise BackendError(f"HEF not found: {contract.model_path} (named by contract {contract.source})")

        self.contract = contract
        self.options = hailo_options_from_dict(options)
        self._hailo_platform = hailo_device.import_hailo_platform()
        self.hailort_version = str(getattr(self._hailo_platform, "__version__", "unknown"))
        self._runner: HailoRunner | None = None
        self._frames = 0
        self._retries = 0
        self._last_error: str | None = None

        self._lease = hailo_device.acquire(self.options)
        try:
            self._open_runner()
        except BaseException:
            self._lease.close()
            raise
        _log.info("Hailo backend ready: %s (model %s, HailoRT %s, %s API, encoding %s)",
                  contract.model_path.name, contract.model_id, self.hailort_version, self._runner.api,
                  self._codec.encoding)

    def _open_runner(self) -> None:
        """Configure the HEF on the lease's VDevice and check it against the contract."""
        try:
            runner = self._make_runner(self._lease.vdevice)
        except BackendError:
            raise
        except Exception as exc:  # HailoRT raises HailoRTException subclasses or its raw status class
            raise HailoUnavailable(failure_from_exception(exc)) from exc

        spec = self.contract.input
        expected = (spec.height, spec.width, 3)
        if runner.input_shape != expected:
            runner.close()
            raise BackendError(
                f"HEF {self.contract.model_path.name} takes input {list(runner.input_shape)}, but its contract "
                f"says {spec.height}x{spec.width}x3; fix input.height and input.width in {self.contract.source}"
            )
        self._codec = HailoCodec(self.contract, runner.input_quant, runner.output_quant, runner.output_is_float)
        self._runner = runner

    def _make_runner(self, vdevice: Any) -> HailoRunner:
        api = self.options.api
        if api == "auto":
            api = "infer_model" if has_infer_model(vdevice) else "vstreams"
        if api == "infer_model":
            if not has_infer_model(vdevice):
                raise BackendError(
                    f"HailoRT {self.hailort_version} has no InferModel API (added in 4.18); "
                    f"set hailo api to vstreams or auto"
                )
            return InferModelRunner(self._hailo_platform, vdevice, self.contract, self.options)
        return VStreamsRunner(self._hailo_platform, vdevice, self.contract, self.options)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embed uint8 images [N, H, W, 3]; return float32 [N, D] with unit-norm rows."""
        images = check_images(images, self.contract)
        if len(images) == 0:
            return np.zeros((0, self.contract.output.dim), dtype=np.float32)
        if self._runner is None:
            raise BackendError("the Hailo backend is closed; open a new one")

        frames = self._codec.encode(images)
        outputs = self._run_with_retry(frames)
        vectors = self._codec.decode(outputs, len(images))
        self._frames += len(images)
        return l2_normalize(vectors)

    def _run_with_retry(self, frames: np.ndarray) -> np.ndarray:
        attempts = self.options.max_attempts
        recreate = False
        for attempt in range(1, attempts + 1):
            try:
                if recreate or self._runner is None or self._lease.stale:
                    self._reopen(recreate=recreate)
                return self._runner.run(frames)
            except HailoUnavailable as exc:
                # Re-opening failed; the device worked before, so this counts as one failed attempt.
                failure = exc.failure
            except BackendError:
                raise
            except Exception as exc:  # HailoRT raises HailoRTException subclasses or its raw status class
                failure = failure_from_exception(exc)
                if not failure.transient:
                    self._last_error = failure.message()
                    raise HailoRunError(failure, attempt) from exc

            self._last_error = failure.message()
            if attempt == attempts:
                raise HailoRunError(failure, attempt)
            delay = self.options.backoff_seconds(attempt)
            _log.warning("Hailo inference failed (attempt %d of %d, %d frame(s)): %s; re-creating the VDevice "
                         "in %.2f s", attempt, attempts, len(frames), failure.message(), delay)
            self._retries += 1
            time.sleep(delay)
            recreate = True
        raise AssertionError("unreachable: the loop returns or raises")

    def _reopen(self, recreate: bool) -> None:
        if self._runner is not None:
            self._close_runner()
        if recreate:
            self._lease.recreate()
        else:
            self._lease.refresh()
        self._open_runner()

    def _close_runner(self) -> None:
        runner, self._runner = self._runner, None
        try:
            runner.close()
        except Exception as exc:  # the device may already be gone; the runner is dropped either way
            _log.debug("closing the Hailo runner failed: %s", exc)

    def status(self) -> dict[str, Any]:
        """Counters and settings for health reports."""
        return {
            "backend": NAME,
            "model_id": self.contract.model_id,
            "hef": str(self.contract.model_path),
            "hailort_version": self.hailort_version,
            "api": self._runner.api if self._runner else None,
            "encoding": self.contract.input.hailo_encoding,
            "frames": self._frames,
            "retries": self._retries,
            "last_error": self._last_error,
            "open": self._runner is not None,
        }

    def close(self) -> None:
        if self._runner is not None:
            self._close_runner()
        self._lease.close()
