"""Counters, gauges and histograms rendered in the Prometheus text exposition format (version 0.0.4).

A small registry instead of prometheus_client keeps the service free of
extra dependencies; it implements only what /metrics needs. Every metric
is safe to update from one thread while another renders.
"""

from __future__ import annotations

import math
import threading
from typing import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds; covers a 1 ms FAISS search up to a multi-second stall on a loaded CPU.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

LabelValues = tuple[str, ...]


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Iterable[str] = ()):
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labels):
            raise ValueError(f"metric {self.name} takes labels {list(self.labels)}, got {sorted(labels)}")
        return tuple(str(labels[name]) for name in self.labels)

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        raise NotImplementedError

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for name, labels, value in self.samples():
            lines.append(f"{name}{_format_labels(labels)} {_format_value(value)}")
        return lines


class Counter(_Metric):
    """A monotonically increasing count."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Iterable[str] = ()):
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {} if self.labels else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name} can only increase, got {amount}")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self):
        with self._lock:
            items = sorted(self._values.items())
        return [(self.name, dict(zip(self.labels, key)), value) for key, value in items]


class Gauge(_Metric):
    """A value that goes up and down."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Iterable[str] = ()):
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {} if self.labels else {(): 0.0}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def clear(self) -> None:
        with self._lock:
            self._values = {} if self.labels else {(): 0.0}

    def samples(self):
        with self._lock:
            items = sorted(self._values.items())
        return [(self.name, dict(zip(self.labels, key)), value) for key, value in items]


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, labels: Iterable[str] = (), buckets=LATENCY_BUCKETS):
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[LabelValues, list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += 1
            series[-1] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(self._key(labels))
        return int(series[-2]) if series else 0

    def samples(self):
        with self._lock:
            items = sorted((key, list(series)) for key, series in self._series.items())
        out = []
        for key, series in items:
            labels = dict(zip(self.labels, key))
            for bound, count in zip(self.buckets, series):
                out.append((f"{self.name}_bucket", {**labels, "le": _format_value(bound)}, count))
            out.append((f"{self.name}_bucket", {**labels, "le": "+Inf"}, series[-2]))
            out.append((f"{self.name}_sum", labels, series[-1]))
            out.append((f"{self.name}_count", labels, series[-2]))
        return out


class Sampled(_Metric):
    """A counter or gauge read from a function at render time, for values another object owns."""

    def __init__(self, name: str, help_text: str, kind: str, read: Callable[[], float | dict[LabelValues, float]],
                 labels: Iterable[str] = ()):
        super().__init__(name, help_text, labels)
        self.kind = kind
        self._read = read

    def samples(self):
        value = self._read()
        if isinstance(value, dict):
            return [(self.name, dict(zip(self.labels, key)), v) for key, v in sorted(value.items())]
        return [(self.name, {}, float(value))]


class Registry:
    """The metrics of one process, rendered in registration order."""

    def __init__(self):
        self._metrics: list[_Metric] = []
        self._names: set[str] = set()

    def add(self, metric: _Metric) -> _Metric:
        if metric.name in self._names:
            raise ValueError(f"metric {metric.name} is already registered")
        self._names.add(metric.name)
        self._metrics.append(metric)
        return metric

    def counter(self, name: str, help_text: str, labels: Iterable[str] = ()) -> Counter:
        return self.add(Counter(name, help_text, labels))

    def gauge(self, name: str, help_text: str, labels: Iterable[str] = ()) -> Gauge:
        return self.add(Gauge(name, help_text, labels))

    def histogram(self, name: str, help_text: str, labels: Iterable[str] = (), buckets=LATENCY_BUCKETS) -> Histogram:
        return self.add(Histogram(name, help_text, labels, buckets))

    def sampled(self, name: str, help_text: str, kind: str, read, labels: Iterable[str] = ()) -> Sampled:
        return self.add(Sampled(name, help_text, kind, read, labels))

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape_label(str(value))}"' for name, value in labels.items()) + "}"


def _format_value(value: float) -> str:
    if isinstance(value, str):
        return value
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
