"""Export stage: the request-duration histograms of one traced process, aggregated here.

The SDK's Histogram.record cleans and hashes the attributes into a Measurement and walks
views and readers for every call: 8 us a request on this machine, an eighth of the agent's
cost per request. These histograms are the agent's own and fixed (explicit buckets, no
views, no exemplars), so they are aggregated in a dict here (about 1 us) and handed to the
SDK as its own data types at collection, to go out through the SDK's metric exporter.
Temporality follows the exporter's preference
(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE), as the SDK's readers do.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import AttributeValue

# at most this many attribute sets per histogram, as the SDK's cardinality limit; the
# overflow set carries the conventions' otel.metric.overflow attribute
MAX_SERIES = 2000
OVERFLOW_ATTRIBUTES: dict[str, AttributeValue] = {"otel.metric.overflow": True}


@dataclass(frozen=True)
class HistogramSpec:
    name: str
    description: str
    unit: str
    boundaries: tuple[float, ...]


@dataclass
class _Series:
    attributes: Mapping[str, AttributeValue]
    boundaries: tuple[float, ...]
    bucket_counts: list[int]
    start_ns: int
    count: int = 0
    sum: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")


@dataclass
class _Instrument:
    spec: HistogramSpec
    series: dict[frozenset, _Series] = field(default_factory=dict)


class DurationHistograms:
    """One process's duration histograms: record() on the pipe's thread, collect() on the
    metrics pump's."""

    def __init__(
        self,
        resource: Resource,
        scope: InstrumentationScope,
        specs: Mapping[object, HistogramSpec],
        temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE,
    ) -> None:
        self.resource = resource
        self.scope = scope
        self.temporality = temporality
        self._instruments = {key: _Instrument(spec) for key, spec in specs.items()}
        self._lock = threading.Lock()
        self._last_collect_ns = time.time_ns()
        # (instrument key, the series) by the identity of an attribute dict that HttpSpanMemo
        # shares between repeated spans: no frozenset per request. An entry keeps its dict,
        # so the id cannot be reused while cached; emptied when a collection replaces series.
        self._by_identity: dict[int, tuple[Mapping[str, AttributeValue], object, _Series]] = {}

    def record(self, key: object, value: float, attributes: Mapping[str, AttributeValue]) -> None:
        with self._lock:
            known = self._by_identity.get(id(attributes))
            if known is not None and known[1] == key:
                series = known[2]
            else:
                instrument = self._instruments.get(key)
                if instrument is None:
                    return
                series_key = frozenset(attributes.items())
                series = instrument.series.get(series_key)
                if series is None:
                    series = self._new_series(instrument, series_key, attributes)
                if len(self._by_identity) >= MAX_SERIES:
                    self._by_identity.clear()
                self._by_identity[id(attributes)] = (attributes, key, series)
            boundaries = series.boundaries
            series.bucket_counts[bisect_left(boundaries, value)] += 1
            series.count += 1
            series.sum += value
            if value < series.min:
                series.min = value
            if value > series.max:
                series.max = value

    def _new_series(
        self, instrument: _Instrument, key: frozenset, attributes: Mapping[str, AttributeValue]
    ) -> _Series:
        if len(instrument.series) >= MAX_SERIES - 1:
            key = frozenset(OVERFLOW_ATTRIBUTES.items())
            attributes = OVERFLOW_ATTRIBUTES
            found = instrument.series.get(key)
            if found is not None:
                return found
        start_ns = self._last_collect_ns
        if self.temporality is AggregationTemporality.CUMULATIVE:
            start_ns = time.time_ns()
        boundaries = instrument.spec.boundaries
        series = _Series(dict(attributes), boundaries, [0] * (len(boundaries) + 1), start_ns)
        instrument.series[key] = series
        return series

    def collect(self) -> ResourceMetrics | None:
        """The points since the last collection (delta) or since the start (cumulative)."""
        now = time.time_ns()
        delta = self.temporality is AggregationTemporality.DELTA
        metrics = []
        with self._lock:
            for instrument in self._instruments.values():
                spec = instrument.spec
                points = [
                    self._point(series, spec.boundaries, now)
                    for series in instrument.series.values()
                ]
                if delta:
                    instrument.series = {}
                    self._by_identity.clear()  # it names series that are gone
                if points:
                    histogram = Histogram(points, aggregation_temporality=self.temporality)
                    metrics.append(Metric(spec.name, spec.description, spec.unit, histogram))
            self._last_collect_ns = now
        if not metrics:
            return None
        scope_metrics = ScopeMetrics(self.scope, metrics, self.scope.schema_url or "")
        return ResourceMetrics(self.resource, [scope_metrics], self.resource.schema_url)

    @staticmethod
    def _point(series: _Series, bounds: tuple[float, ...], now: int) -> HistogramDataPoint:
        return HistogramDataPoint(
            attributes=series.attributes,
            start_time_unix_nano=series.start_ns,
            time_unix_nano=now,
            count=series.count,
            sum=series.sum,
            bucket_counts=tuple(series.bucket_counts),
            explicit_bounds=bounds,
            min=series.min,
            max=series.max,
        )
