"""Export stage: span records and metric points through the OpenTelemetry SDK to one exporter.

A traced host has many services and an SDK provider has one Resource. The decision: one
Resource per traced process, all feeding ONE shared export path:
- every process's spans go to the same SpanBatcher (span_batches.py), so spans of many
  resources are batched together and the OTLP exporter groups them by resource in one
  request;
- every process has its duration histograms (duration_metrics.py, aggregated by the agent);
  one MetricsPump thread collects them, and the agent's own SDK meters, on the export
  interval and sends one merged MetricsData through the one metric exporter.
tests/unit/test_telemetry.py pins this.

OTEL_SDK_DISABLED=true: no span is queued and no metric collected or exported, whatever
exporters were given; the agent's own counts (its exit summary) do not depend on this stage.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from opentelemetry.sdk.environment_variables import OTEL_METRIC_EXPORT_INTERVAL
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.semconv._incubating.metrics.rpc_metrics import (
    RPC_CLIENT_CALL_DURATION,
    RPC_SERVER_CALL_DURATION,
)
from opentelemetry.semconv.metrics.http_metrics import (
    HTTP_CLIENT_REQUEST_DURATION,
    HTTP_SERVER_REQUEST_DURATION,
)
from opentelemetry.trace import SpanKind

from otelbpf.export.destinations import sdk_disabled
from otelbpf.export.duration_metrics import DurationHistograms, HistogramSpec
from otelbpf.export.finished_spans import SCOPE, SpanFactory
from otelbpf.export.http_spans import SpanRecord
from otelbpf.export.span_batches import SpanBatcher, int_setting

log = logging.getLogger(__name__)

# The HTTP semantic conventions' advised bucket boundaries for request durations, in seconds.
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
DEFAULT_EXPORT_INTERVAL_MS = 60000
# The duration histograms, named per the semantic conventions of the package the project uses
# (RPC: rpc.{server,client}.call.duration in seconds, which replaced rpc.*.duration in ms).
# one spec per (metric family, span kind)
DURATION_SPECS = {
    ("http", SpanKind.SERVER): HistogramSpec(
        HTTP_SERVER_REQUEST_DURATION,
        "Duration of HTTP server requests.",
        "s",
        HTTP_DURATION_BUCKETS,
    ),
    ("http", SpanKind.CLIENT): HistogramSpec(
        HTTP_CLIENT_REQUEST_DURATION,
        "Duration of HTTP client requests.",
        "s",
        HTTP_DURATION_BUCKETS,
    ),
    ("rpc", SpanKind.SERVER): HistogramSpec(
        RPC_SERVER_CALL_DURATION, "Duration of incoming RPCs.", "s", HTTP_DURATION_BUCKETS
    ),
    ("rpc", SpanKind.CLIENT): HistogramSpec(
        RPC_CLIENT_CALL_DURATION, "Duration of outgoing RPCs.", "s", HTTP_DURATION_BUCKETS
    ),
}


class ProcessTelemetry:
    """One traced process's Resource and duration histograms; its spans go to the shared
    batcher."""

    def __init__(
        self,
        resource: Resource,
        batcher: SpanBatcher,
        durations: DurationHistograms | None,
        spans: SpanFactory,
    ) -> None:
        self.resource = resource
        self._add = batcher.add
        self._build = spans.build
        self.durations = durations

    def record(self, span: SpanRecord) -> None:
        built = self._build(span, self.resource)
        if built is not None:
            self._add(built)
        if self.durations is not None:
            self.durations.record(
                (span.duration_metric, span.kind),
                (span.end_ns - span.start_ns) / 1e9,
                span.metric_attributes,
            )


class _NotExported(ProcessTelemetry):
    """Every process, when OTEL_SDK_DISABLED=true: no resource is read, nothing recorded."""

    def __init__(self) -> None:
        self.resource = Resource.get_empty()
        self.durations = None

    def record(self, span: SpanRecord) -> None:
        pass


class MetricsPump:
    """Collects every source on the export interval and exports one MetricsData."""

    def __init__(
        self,
        exporter: MetricExporter,
        collect: Callable[[], list[ResourceMetrics]],
        interval_ms: int | None = None,
    ) -> None:
        self.exporter = exporter
        self._collect = collect
        # empty is unset; not a positive whole number: a warning, and the default
        interval_ms = int_setting(
            OTEL_METRIC_EXPORT_INTERVAL, interval_ms, DEFAULT_EXPORT_INTERVAL_MS
        )
        self.interval_s = max(0.05, interval_ms / 1000)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._collector_down = False  # the last export failed
        self._thread = threading.Thread(target=self._run, name="otelbpf-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.export_once()

    def export_once(self) -> None:
        with self._lock:
            if self._stop.is_set() and self._collector_down:
                # as the span batcher: the exit does not wait out the timeout once more
                log.warning("the collector did not take the last metric export: not retried")
                return
            resource_metrics = self._collect()
            if not resource_metrics:
                return
            try:
                result = self.exporter.export(MetricsData(resource_metrics=resource_metrics))
            except Exception as error:  # a collector that is down must not stop the agent
                log.warning("metric export failed: %s", error)
                result = MetricExportResult.FAILURE
            self._collector_down = result is not MetricExportResult.SUCCESS

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.export_once()
        self.exporter.shutdown()


class Telemetry:
    """Routes span records to their process's SDK objects; owns the shared export path."""

    def __init__(
        self,
        batcher: SpanBatcher,
        metric_exporter: MetricExporter | None,
        resource_of: Callable[[int, str], Resource],
        max_processes: int = 4096,
        export_interval_ms: int | None = None,
    ) -> None:
        self.batcher = batcher
        self._spans = SpanFactory()
        self._resource_of = resource_of
        self._max_processes = max_processes
        self._processes: OrderedDict[int, ProcessTelemetry] = OrderedDict()
        self._last: tuple[int, ProcessTelemetry] | None = None  # the most recently used
        self._extra_readers: list[InMemoryMetricReader] = []
        self._retired: list[DurationHistograms] = []  # collected once more, then gone
        self._lock = threading.Lock()
        # OTEL_SDK_DISABLED=true: nothing leaves this stage (destinations.describe says so)
        self.disabled = sdk_disabled()
        self._unused_exporter: MetricExporter | None = None
        if self.disabled:
            self._unused_exporter, metric_exporter = metric_exporter, None
            self._not_exported = _NotExported()
        self.metric_exporter = metric_exporter
        self.pump: MetricsPump | None = None
        if metric_exporter is not None:
            self.pump = MetricsPump(metric_exporter, self._collect, export_interval_ms)

    def _new_histograms(self, resource: Resource) -> DurationHistograms | None:
        if self.metric_exporter is None:
            return None
        temporality = self.metric_exporter._preferred_temporality.get(
            SdkHistogram, AggregationTemporality.CUMULATIVE
        )
        return DurationHistograms(resource, SCOPE, DURATION_SPECS, temporality)

    def _collect(self) -> list[ResourceMetrics]:
        with self._lock:
            sources = [p.durations for p in self._processes.values() if p.durations is not None]
            retired, self._retired = self._retired, []
        collected = []
        for reader in self._extra_readers:
            data = reader.get_metrics_data()
            if data is not None:
                collected.extend(data.resource_metrics)
        for histograms in retired + sources:
            points = histograms.collect()
            if points is not None:
                collected.append(points)
        return collected

    def meter_provider(self, resource: Resource) -> MeterProvider | None:
        """A MeterProvider exported through the shared pump (the agent's own metrics)."""
        if self.metric_exporter is None:
            return None
        reader = InMemoryMetricReader(
            preferred_temporality=self.metric_exporter._preferred_temporality,
            preferred_aggregation=self.metric_exporter._preferred_aggregation,
        )
        self._extra_readers.append(reader)
        return MeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)

    def start(self) -> None:
        if self.pump is not None:
            self.pump.start()

    def process(self, pid: int, comm: str = "") -> ProcessTelemetry:
        if self.disabled:
            return self._not_exported  # nothing is exported: no resource to describe
        last = self._last
        if last is not None and last[0] == pid:
            return last[1]  # the most recent already: consecutive spans are mostly one process's
        with self._lock:
            found = self._processes.get(pid)
            if found is not None:
                self._processes.move_to_end(pid)
                self._last = (pid, found)
                return found
        resource = self._resource_of(pid, comm)
        created = ProcessTelemetry(
            resource, self.batcher, self._new_histograms(resource), self._spans
        )
        with self._lock:
            self._processes[pid] = created
            while len(self._processes) > self._max_processes:
                self._retire(self._processes.popitem(last=False)[1])
            self._last = (pid, created)
        return created

    def forget(self, pid: int) -> None:
        """A process exec'd or its pid may be reused: describe it afresh next time."""
        with self._lock:
            self._last = None
            old = self._processes.pop(pid, None)
            if old is not None:
                self._retire(old)

    def _retire(self, old: ProcessTelemetry) -> None:
        # its last points go out with the next collection; then it is dropped
        if old.durations is not None:
            self._retired.append(old.durations)

    def record(self, pid: int, comm: str, span: SpanRecord) -> None:
        self.process(pid, comm).record(span)

    def shutdown(self) -> None:
        self.batcher.shutdown()  # what is queued goes out first
        if self.pump is not None:
            self.pump.shutdown()
        if self._unused_exporter is not None:
            self._unused_exporter.shutdown()
