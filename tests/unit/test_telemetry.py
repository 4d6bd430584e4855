"""The export design, pinned against real OTLP exporters and a real OTLP receiver.

One SpanBatcher serves every traced process: spans of many resources go out in ONE
export request with one ResourceSpans per process. Every process's metrics are collected by
one pump and go out in one request per export. See otelbpf/export/telemetry.py.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind

from otelbpf import __version__
from otelbpf.export.console import ConsoleLineExporter
from otelbpf.export.finished_spans import INSTRUMENTATION_SCOPE
from otelbpf.export.http_spans import SpanRecord
from otelbpf.export.otlp_encoding import GrpcSpanExporter, HttpSpanExporter
from otelbpf.export.span_batches import FinishedSpanExporter, SpanBatcher
from otelbpf.export.telemetry import HTTP_DURATION_BUCKETS, Telemetry
from tests.otlp_receiver import OtlpReceiver, ReceivedMetricPoint

T0 = 1_700_000_000_000_000_000
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TP = f"00-{TRACE_ID}-{PARENT_ID}-01"
CLIENT_TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

RESOURCES = {
    101: {"service.name": "checkout", "process.pid": 101},
    202: {"service.name": "payments", "process.pid": 202},
}
TRANSPORTS = ["grpc", "http"]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or OTEL_* setting of the developer's shell may reroute or reshape exports."""
    for name in list(os.environ):
        if name.upper().endswith("_PROXY") or name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def span_exporter(transport: str, rx: OtlpReceiver) -> FinishedSpanExporter:
    if transport == "grpc":
        return GrpcSpanExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=5)
    return HttpSpanExporter(endpoint=rx.http_traces_url, timeout=5)


def metric_exporter(transport: str, rx: OtlpReceiver) -> MetricExporter:
    if transport == "grpc":
        return GrpcMetricExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=5)
    return HttpMetricExporter(endpoint=rx.http_metrics_url, timeout=5)


class ResourceOf:
    """resource_of for Telemetry: a fixed Resource per pid, and a log of who was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def __call__(self, pid: int, comm: str) -> Resource:
        self.calls.append((pid, comm))
        return Resource(RESOURCES[pid])


def record(
    name: str,
    kind: SpanKind,
    start_ns: int,
    duration_ns: int,
    attributes: dict,
    *,
    is_error: bool = False,
    traceparent: str | None = None,
    metric_attributes: dict | None = None,
) -> SpanRecord:
    return SpanRecord(
        name=name,
        kind=kind,
        start_ns=start_ns,
        end_ns=start_ns + duration_ns,
        attributes=attributes,
        is_error=is_error,
        traceparent=traceparent,
        metric_attributes=metric_attributes or {},
    )


SERVER_ATTRS = {
    "http.request.method": "GET",
    "http.route": "/cart",
    "http.response.status_code": 200,
}
SERVER_METRIC_ATTRS = {
    "http.request.method": "GET",
    "http.route": "/cart",
    "url.scheme": "http",
    "http.response.status_code": 200,
}
ERROR_ATTRS = {
    "http.request.method": "POST",
    "http.route": "/pay",
    "http.response.status_code": 503,
}
ERROR_METRIC_ATTRS = {
    "http.request.method": "POST",
    "http.route": "/pay",
    "url.scheme": "http",
    "http.response.status_code": 503,
}
CLIENT_ATTRS = {
    "http.request.method": "POST",
    "url.full": "http://payments:8080/pay",
    "server.address": "payments",
    "server.port": 8080,
    "http.response.status_code": 404,
}
CLIENT_METRIC_ATTRS = {
    "http.request.method": "POST",
    "server.address": "payments",
    "server.port": 8080,
    "http.response.status_code": 404,
}


def record_sample(telemetry: Telemetry) -> None:
    """checkout (101): a SERVER span continuing a trace, and a failing CLIENT call.
    payments (202): a SERVER span that fails with 503."""
    telemetry.record(
        101,
        "checkout",
        record(
            "GET /cart",
            SpanKind.SERVER,
            T0,
            250_000_000,
            SERVER_ATTRS,
            traceparent=TP,
            metric_attributes=SERVER_METRIC_ATTRS,
        ),
    )
    telemetry.record(
        101,
        "checkout",
        record(
            "POST /pay",
            SpanKind.CLIENT,
            T0 + 1_000_000,
            500_000_000,
            CLIENT_ATTRS,
            is_error=True,
            traceparent=CLIENT_TP,
            metric_attributes=CLIENT_METRIC_ATTRS,
        ),
    )
    telemetry.record(
        202,
        "payments",
        record(
            "POST /pay",
            SpanKind.SERVER,
            T0 + 2_000_000,
            1_500_000_000,
            ERROR_ATTRS,
            is_error=True,
            metric_attributes=ERROR_METRIC_ATTRS,
        ),
    )


# ---------------------------------------------------------------- spans


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_spans_of_two_processes_go_in_one_request(receiver: OtlpReceiver, transport: str) -> None:
    resource_of = ResourceOf()
    batcher = SpanBatcher(span_exporter(transport, receiver), schedule_delay_ms=600_000)
    telemetry = Telemetry(batcher, None, resource_of)
    record_sample(telemetry)
    assert resource_of.calls == [(101, "checkout"), (202, "payments")]  # once per process
    assert receiver.requests[f"{transport}-traces"] == 0  # batched, not sent per span

    assert batcher.force_flush()
    spans = receiver.wait_for_spans(3, timeout=10)

    assert receiver.requests == {
        "grpc-traces": int(transport == "grpc"),
        "grpc-metrics": 0,
        "http-traces": int(transport == "http"),
        "http-metrics": 0,
    }
    groups = receiver.resource_spans_per_request()
    assert len(groups) == 1
    assert sorted(groups[0], key=lambda r: r["service.name"]) == [RESOURCES[101], RESOURCES[202]]

    by_name_kind = {(s.name, s.kind): s for s in spans}
    assert len(by_name_kind) == 3
    server = by_name_kind[("GET /cart", "SERVER")]
    client = by_name_kind[("POST /pay", "CLIENT")]
    failed = by_name_kind[("POST /pay", "SERVER")]

    # the SERVER span continues the trace its request carried
    assert (server.trace_id, server.parent_span_id) == (TRACE_ID, PARENT_ID)
    assert (server.start_ns, server.end_ns) == (T0, T0 + 250_000_000)
    assert server.attributes == SERVER_ATTRS
    assert server.status_code == "UNSET"
    assert server.resource == RESOURCES[101]
    assert (server.scope_name, server.scope_version) == (INSTRUMENTATION_SCOPE, __version__)

    # a CLIENT span's traceparent is the one it sent, not a parent: it starts its own trace
    assert client.parent_span_id == ""
    assert client.trace_id not in (TRACE_ID, CLIENT_TP.split("-")[1])
    assert (client.start_ns, client.end_ns) == (T0 + 1_000_000, T0 + 501_000_000)
    assert client.attributes == CLIENT_ATTRS
    assert (client.status_code, client.status_message) == ("ERROR", "")
    assert client.resource == RESOURCES[101]

    assert failed.parent_span_id == ""
    assert (failed.start_ns, failed.end_ns) == (T0 + 2_000_000, T0 + 1_502_000_000)
    assert failed.attributes == ERROR_ATTRS
    assert failed.status_code == "ERROR"
    assert failed.resource == RESOURCES[202]

    telemetry.shutdown()
    assert receiver.requests[f"{transport}-traces"] == 1  # nothing was left to send


# ---------------------------------------------------------------- metrics


def histogram_points(
    points: list[ReceivedMetricPoint],
) -> dict[tuple[str, str], ReceivedMetricPoint]:
    found = {}
    for point in points:
        key = (point.resource["service.name"], point.name)
        assert key not in found, f"two points for {key}"
        found[key] = point
    return found


def bucket_counts(*durations_s: float) -> list[int]:
    counts = [0] * (len(HTTP_DURATION_BUCKETS) + 1)
    for duration in durations_s:
        counts[next((i for i, b in enumerate(HTTP_DURATION_BUCKETS) if duration <= b), -1)] += 1
    return counts


def expected_histogram(name: str, service: int, attributes: dict, durations_s: list[float]) -> dict:
    return {
        "name": name,
        "unit": "s",
        "kind": "histogram",
        "resource": RESOURCES[service],
        "scope_name": INSTRUMENTATION_SCOPE,
        "attributes": attributes,
        "count": len(durations_s),
        "sum": sum(durations_s),
        "min": min(durations_s),
        "max": max(durations_s),
        "explicit_bounds": [float(b) for b in HTTP_DURATION_BUCKETS],
        "bucket_counts": bucket_counts(*durations_s),
        "temporality": "CUMULATIVE",
    }


def view(point: ReceivedMetricPoint) -> dict:
    return {
        "name": point.name,
        "unit": point.unit,
        "kind": point.kind,
        "resource": point.resource,
        "scope_name": point.scope_name,
        "attributes": point.attributes,
        "count": point.count,
        "sum": point.sum,
        "min": point.min,
        "max": point.max,
        "explicit_bounds": point.explicit_bounds,
        "bucket_counts": point.bucket_counts,
        "temporality": point.temporality,
    }


def services_per_export(rx: OtlpReceiver) -> list[list[str]]:
    """The service.name of each ResourceMetrics, per metrics export request."""
    return [
        sorted(
            attribute.value.string_value
            for resource_metrics in request.resource_metrics
            for attribute in resource_metrics.resource.attributes
            if attribute.key == "service.name"
        )
        for request in rx.metrics_requests()
    ]


def make_telemetry(transport: str, rx: OtlpReceiver) -> Telemetry:
    batcher = SpanBatcher(span_exporter(transport, rx), schedule_delay_ms=600_000)
    return Telemetry(batcher, metric_exporter(transport, rx), ResourceOf())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_duration_histograms_per_resource(receiver: OtlpReceiver, transport: str) -> None:
    telemetry = make_telemetry(transport, receiver)
    record_sample(telemetry)
    # a second checkout request with the same attributes lands in the same point
    telemetry.record(
        101,
        "checkout",
        record(
            "GET /cart",
            SpanKind.SERVER,
            T0 + 9_000_000,
            500_000_000,
            SERVER_ATTRS,
            metric_attributes=SERVER_METRIC_ATTRS,
        ),
    )
    assert telemetry.pump is not None
    assert receiver.requests[f"{transport}-metrics"] == 0  # nothing exports on its own

    telemetry.pump.export_once()

    assert receiver.requests[f"{transport}-metrics"] == 1
    [request] = receiver.metrics_requests()
    assert len(request.resource_metrics) == 2
    points = histogram_points(receiver.metrics())
    assert {key: view(point) for key, point in points.items()} == {
        ("checkout", "http.server.request.duration"): expected_histogram(
            "http.server.request.duration", 101, SERVER_METRIC_ATTRS, [0.25, 0.5]
        ),
        ("checkout", "http.client.request.duration"): expected_histogram(
            "http.client.request.duration", 101, CLIENT_METRIC_ATTRS, [0.5]
        ),
        ("payments", "http.server.request.duration"): expected_histogram(
            "http.server.request.duration", 202, ERROR_METRIC_ATTRS, [1.5]
        ),
    }
    telemetry.shutdown()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_agent_meter_provider_goes_through_the_same_pump(
    receiver: OtlpReceiver, transport: str
) -> None:
    telemetry = make_telemetry(transport, receiver)
    agent = Resource({"service.name": "otelbpf", "process.pid": 1})
    provider = telemetry.meter_provider(agent)
    assert provider is not None
    counter = provider.get_meter("otelbpf").create_counter("otelbpf.spans", unit="{span}")
    counter.add(3)
    record_sample(telemetry)

    telemetry.pump.export_once()

    assert receiver.requests[f"{transport}-metrics"] == 1
    [request] = receiver.metrics_requests()
    assert len(request.resource_metrics) == 3
    counters = [p for p in receiver.metrics() if p.kind == "sum"]
    assert [(p.name, p.resource, p.value, p.is_monotonic) for p in counters] == [
        ("otelbpf.spans", {"service.name": "otelbpf", "process.pid": 1}, 3, True)
    ]
    assert sorted({p.resource["service.name"] for p in receiver.metrics()}) == [
        "checkout",
        "otelbpf",
        "payments",
    ]
    telemetry.shutdown()


def test_no_metric_exporter_means_no_pump_and_no_meter_provider() -> None:
    telemetry = Telemetry(
        SpanBatcher(HttpSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")),
        None,
        ResourceOf(),
    )
    assert telemetry.pump is None
    assert telemetry.meter_provider(Resource({})) is None
    process = telemetry.process(101, "checkout")
    assert process.durations is None


def test_forget_keeps_last_points_for_exactly_one_more_export(receiver: OtlpReceiver) -> None:
    resource_of = ResourceOf()
    telemetry = Telemetry(
        SpanBatcher(span_exporter("grpc", receiver), schedule_delay_ms=600_000),
        metric_exporter("grpc", receiver),
        resource_of,
    )
    record_sample(telemetry)

    telemetry.pump.export_once()
    telemetry.forget(101)
    telemetry.pump.export_once()  # checkout's last points, one more time
    telemetry.pump.export_once()  # gone
    assert services_per_export(receiver) == [
        ["checkout", "payments"],
        ["checkout", "payments"],
        ["payments"],
    ]

    # a new program under the same pid is described afresh
    telemetry.record(
        101,
        "checkout",
        record(
            "GET /cart",
            SpanKind.SERVER,
            T0,
            250_000_000,
            SERVER_ATTRS,
            metric_attributes=SERVER_METRIC_ATTRS,
        ),
    )
    assert resource_of.calls == [(101, "checkout"), (202, "payments"), (101, "checkout")]
    receiver.clear()
    telemetry.pump.export_once()
    fresh = histogram_points(receiver.metrics())[("checkout", "http.server.request.duration")]
    assert (fresh.count, fresh.sum) == (1, 0.25)  # the old process's counts did not carry over
    telemetry.shutdown()


def test_forget_of_an_unknown_pid_is_harmless(receiver: OtlpReceiver) -> None:
    telemetry = make_telemetry("http", receiver)
    telemetry.forget(999)
    telemetry.pump.export_once()
    assert receiver.requests["http-metrics"] == 0  # nothing to send, nothing sent
    telemetry.shutdown()


def test_least_recently_used_process_is_retired_past_the_limit(receiver: OtlpReceiver) -> None:
    resource_of = ResourceOf()
    telemetry = Telemetry(
        SpanBatcher(span_exporter("http", receiver), schedule_delay_ms=600_000),
        metric_exporter("http", receiver),
        resource_of,
        max_processes=1,
    )
    record_sample(telemetry)  # 101 then 202: 101 is retired when 202 arrives
    telemetry.pump.export_once()
    telemetry.pump.export_once()
    assert services_per_export(receiver) == [["checkout", "payments"], ["payments"]]
    telemetry.shutdown()


class CountingMetricExporter(GrpcMetricExporter):
    """The real gRPC metric exporter, counting its export calls."""

    calls = 0

    def export(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self.calls += 1
        return super().export(*args, **kwargs)


def test_the_exit_sends_metrics_once_more_only_if_the_last_export_went_through() -> None:
    """A collector that is down costs the exporter's whole timeout per try: the exit tries
    again only when the last export went through."""
    from otelbpf.export.telemetry import MetricsPump

    with OtlpReceiver() as rx:
        telemetry = make_telemetry("grpc", rx)
        record_sample(telemetry)
        up = CountingMetricExporter(endpoint=rx.grpc_endpoint, insecure=True, timeout=5)
        pump = MetricsPump(up, telemetry._collect, interval_ms=600_000)
        pump.export_once()
        pump.shutdown()
        assert up.calls == 2
        assert len(rx.metrics_requests()) == 2
        endpoint = rx.grpc_endpoint
    # the receiver has stopped: its port refuses, and each export fails after its retries
    down = CountingMetricExporter(endpoint=endpoint, insecure=True, timeout=1)
    pump = MetricsPump(down, telemetry._collect, interval_ms=600_000)
    pump.export_once()
    pump.shutdown()
    assert down.calls == 1
    telemetry.batcher.shutdown()


# ---------------------------------------------------------------- OTEL_METRIC_EXPORT_INTERVAL


@pytest.mark.parametrize(
    ("value", "interval_s", "warning"),
    [
        ("", 60.0, None),  # empty is unset
        ("1500", 1.5, None),
        ("soon", 60.0, "OTEL_METRIC_EXPORT_INTERVAL='soon' is not a whole number: using 60000"),
        ("0", 60.0, "OTEL_METRIC_EXPORT_INTERVAL='0' must be positive: using 60000"),
    ],
)
def test_the_metric_export_interval_variable(
    value: str,
    interval_s: float,
    warning: str | None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from otelbpf.export.telemetry import MetricsPump

    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", value)
    exporter = HttpMetricExporter(endpoint="http://127.0.0.1:9/v1/metrics")
    with caplog.at_level(logging.WARNING, logger="otelbpf"):
        pump = MetricsPump(exporter, list)
    assert pump.interval_s == interval_s
    assert [r.getMessage() for r in caplog.records] == ([warning] if warning else [])
    assert MetricsPump(exporter, list, interval_ms=250).interval_s == 0.25  # given wins


# ---------------------------------------------------------------- OTEL_SDK_DISABLED


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sdk_disabled_exports_no_span_and_no_metric(
    receiver: OtlpReceiver, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with exporters given: no span queued, no histogram, no pump, no agent meters."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    resource_of = ResourceOf()
    batcher = SpanBatcher(span_exporter(transport, receiver), schedule_delay_ms=50)
    telemetry = Telemetry(batcher, metric_exporter(transport, receiver), resource_of)
    telemetry.start()
    record_sample(telemetry)
    assert telemetry.pump is None
    assert telemetry.meter_provider(Resource({"service.name": "otelbpf"})) is None
    assert telemetry.process(101, "checkout").durations is None
    assert resource_of.calls == []  # no process is described for nothing
    telemetry.shutdown()
    assert receiver.requests == {
        "grpc-traces": 0,
        "grpc-metrics": 0,
        "http-traces": 0,
        "http-metrics": 0,
    }
    assert (batcher.dropped, batcher.failed) == (0, 0)


def test_sdk_disabled_prints_no_span_either(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no endpoint the spans would print: OTEL_SDK_DISABLED stops that as well."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    out = io.StringIO()
    telemetry = Telemetry(SpanBatcher(ConsoleLineExporter(out)), None, ResourceOf())
    record_sample(telemetry)
    telemetry.shutdown()
    assert out.getvalue() == ""
