"""The test OTLP receiver against the real OpenTelemetry SDK and OTLP exporters.

These tests pin that ``tests.otlp_receiver.OtlpReceiver`` decodes what the real
exporters put on the wire (gRPC and HTTP/protobuf, plain and gzip), so the
end-to-end tests that rely on it can trust its view of the agent's output.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests import otlp_receiver
from tests.otlp_receiver import (
    OtlpReceiver,
    ReceivedMetricPoint,
    ReceivedSpan,
    decode_any_value,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

TRANSPORTS = ["grpc", "grpc-gzip", "http", "http-gzip"]

FRONTEND = {"service.name": "frontend", "service.version": "1.4.0", "host.cores": 8}
BACKEND = {"service.name": "backend", "deployment.environment.name": "test"}

T0 = 1_700_000_000_000_000_000  # ns since the epoch
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or OTEL_* setting of the developer's shell may reroute the exporters."""
    for name in list(os.environ):
        if name.upper().endswith("_PROXY") or name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


class SequentialIds(IdGenerator):
    """Deterministic ids so the tests can assert exact hex strings."""

    def __init__(self) -> None:
        self._next_span = 0

    def generate_span_id(self) -> int:
        self._next_span += 1
        return self._next_span

    def generate_trace_id(self) -> int:
        return TRACE_ID


def span_exporter(transport: str, rx: OtlpReceiver) -> SpanExporter:
    if transport.startswith("grpc"):
        compression = grpc.Compression.Gzip if transport.endswith("gzip") else None
        return GrpcSpanExporter(
            endpoint=rx.grpc_endpoint, insecure=True, timeout=5, compression=compression
        )
    return HttpSpanExporter(
        endpoint=rx.http_endpoint + "/v1/traces",
        timeout=5,
        compression=HttpCompression.Gzip if transport.endswith("gzip") else None,
    )


def metric_exporter(
    transport: str,
    rx: OtlpReceiver,
    temporality: dict[type, AggregationTemporality] | None = None,
) -> MetricExporter:
    if transport.startswith("grpc"):
        compression = grpc.Compression.Gzip if transport.endswith("gzip") else None
        return GrpcMetricExporter(
            endpoint=rx.grpc_endpoint,
            insecure=True,
            timeout=5,
            compression=compression,
            preferred_temporality=temporality,
        )
    return HttpMetricExporter(
        endpoint=rx.http_endpoint + "/v1/metrics",
        timeout=5,
        compression=HttpCompression.Gzip if transport.endswith("gzip") else None,
        preferred_temporality=temporality,
    )


def expected_requests(**counts: int) -> dict[str, int]:
    base = {"grpc-traces": 0, "grpc-metrics": 0, "http-traces": 0, "http-metrics": 0}
    base.update({key.replace("_", "-"): value for key, value in counts.items()})
    return base


def transport_key(transport: str, signal: str) -> str:
    return f"{transport.split('-')[0]}_{signal}"


# ---------------------------------------------------------------------------
# Spans
# ---------------------------------------------------------------------------


def export_three_spans(exporter: SpanExporter) -> None:
    """Two TracerProviders (two Resources) feeding ONE BatchSpanProcessor/exporter."""
    processor = BatchSpanProcessor(
        exporter, schedule_delay_millis=60_000, max_export_batch_size=512
    )
    ids = SequentialIds()
    providers = [
        TracerProvider(resource=Resource(FRONTEND), id_generator=ids, shutdown_on_exit=False),
        TracerProvider(resource=Resource(BACKEND), id_generator=ids, shutdown_on_exit=False),
    ]
    for provider in providers:
        provider.add_span_processor(processor)
    frontend = providers[0].get_tracer("otelbpf.http", "0.1.0")
    backend = providers[1].get_tracer("otelbpf.sql")

    server = frontend.start_span(
        "GET /users/{id}",
        kind=SpanKind.SERVER,
        start_time=T0,
        attributes={
            "http.request.method": "GET",
            "http.route": "/users/{id}",
            "http.response.status_code": 200,
            "otelbpf.sampled": True,
            "otelbpf.cpu_ratio": 0.25,
            "otelbpf.tags": ["edge", "eu"],
            "otelbpf.ports": [80, 443],
        },
    )
    server.set_status(Status(StatusCode.OK))
    client = frontend.start_span(
        "GET",
        kind=SpanKind.CLIENT,
        start_time=T0 + 1_000_000,
        context=trace.set_span_in_context(server),
        attributes={"server.address": "backend", "server.port": 8080},
    )
    client.set_attribute("error.type", "ECONNRESET")
    client.set_status(Status(StatusCode.ERROR, "connection reset by peer"))
    query = backend.start_span(
        "SELECT users",
        kind=SpanKind.SERVER,
        start_time=T0 + 1_500_000,
        context=trace.set_span_in_context(client),
        attributes={"db.system.name": "postgresql", "db.response.returned_rows": -1},
    )
    query.end(end_time=T0 + 2_500_000)
    client.end(end_time=T0 + 3_000_000)
    server.end(end_time=T0 + 5_000_000)

    assert processor.force_flush(timeout_millis=10_000)
    processor.shutdown()


EXPECTED_SPANS = [
    ReceivedSpan(
        name="GET /users/{id}",
        kind="SERVER",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="0000000000000001",
        parent_span_id="",
        start_ns=T0,
        end_ns=T0 + 5_000_000,
        attributes={
            "http.request.method": "GET",
            "http.route": "/users/{id}",
            "http.response.status_code": 200,
            "otelbpf.sampled": True,
            "otelbpf.cpu_ratio": 0.25,
            "otelbpf.tags": ["edge", "eu"],
            "otelbpf.ports": [80, 443],
        },
        status_code="OK",
        status_message="",
        resource=FRONTEND,
        scope_name="otelbpf.http",
        scope_version="0.1.0",
    ),
    ReceivedSpan(
        name="GET",
        kind="CLIENT",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="0000000000000002",
        parent_span_id="0000000000000001",
        start_ns=T0 + 1_000_000,
        end_ns=T0 + 3_000_000,
        attributes={"server.address": "backend", "server.port": 8080, "error.type": "ECONNRESET"},
        status_code="ERROR",
        status_message="connection reset by peer",
        resource=FRONTEND,
        scope_name="otelbpf.http",
        scope_version="0.1.0",
    ),
    ReceivedSpan(
        name="SELECT users",
        kind="SERVER",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="0000000000000003",
        parent_span_id="0000000000000002",
        start_ns=T0 + 1_500_000,
        end_ns=T0 + 2_500_000,
        attributes={"db.system.name": "postgresql", "db.response.returned_rows": -1},
        status_code="UNSET",
        status_message="",
        resource=BACKEND,
        scope_name="otelbpf.sql",
        scope_version="",
    ),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_spans_from_two_resources_share_one_request(
    receiver: OtlpReceiver, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    encodings: list[str] = []
    decompress = otlp_receiver._decompress

    def spy(body: bytes, encoding: str) -> bytes:
        encodings.append(encoding)
        return decompress(body, encoding)

    monkeypatch.setattr(otlp_receiver, "_decompress", spy)
    export_three_spans(span_exporter(transport, receiver))

    spans = receiver.wait_for_spans(3, timeout=5)
    assert sorted(spans, key=lambda s: s.start_ns) == EXPECTED_SPANS
    assert [s.duration_ns for s in sorted(spans, key=lambda s: s.start_ns)] == [
        5_000_000,
        2_000_000,
        1_000_000,
    ]
    # Both resources arrive, in ONE export request, as two ResourceSpans.
    assert {s.resource["service.name"] for s in spans} == {"frontend", "backend"}
    groups = receiver.resource_spans_per_request()
    assert len(groups) == 1
    assert sorted(groups[0], key=lambda r: r["service.name"]) == [BACKEND, FRONTEND]
    assert receiver.requests == expected_requests(**{transport_key(transport, "traces"): 1})
    if transport.startswith("http"):
        assert encodings == ["gzip" if transport.endswith("gzip") else "identity"]

    raw = receiver.trace_requests()
    assert len(raw) == 1
    assert sorted(len(rs.scope_spans[0].spans) for rs in raw[0].resource_spans) == [1, 2]


def test_both_transports_on_one_receiver_and_clear(receiver: OtlpReceiver) -> None:
    export_three_spans(span_exporter("grpc", receiver))
    export_three_spans(span_exporter("http", receiver))

    spans = receiver.wait_for_spans(6, timeout=5)
    assert len(spans) == 6
    assert receiver.requests == expected_requests(grpc_traces=1, http_traces=1)
    assert len(receiver.resource_spans_per_request()) == 2

    receiver.clear()
    assert receiver.spans() == []
    assert receiver.resource_spans_per_request() == []
    assert receiver.trace_requests() == []
    assert receiver.requests == expected_requests()


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


def export_metrics(transport: str, rx: OtlpReceiver) -> None:
    frontend_reader = PeriodicExportingMetricReader(
        metric_exporter(transport, rx), export_interval_millis=math.inf
    )
    backend_reader = PeriodicExportingMetricReader(
        metric_exporter(transport, rx, {Counter: AggregationTemporality.DELTA}),
        export_interval_millis=math.inf,
    )
    frontend_provider = MeterProvider(
        metric_readers=[frontend_reader],
        resource=Resource(FRONTEND),
        views=[
            View(
                instrument_name="http.server.request.duration",
                aggregation=ExplicitBucketHistogramAggregation(boundaries=[0.0, 10.0, 100.0]),
            )
        ],
        shutdown_on_exit=False,
    )
    backend_provider = MeterProvider(
        metric_readers=[backend_reader], resource=Resource(BACKEND), shutdown_on_exit=False
    )

    meter = frontend_provider.get_meter("otelbpf.http")
    duration = meter.create_histogram(
        "http.server.request.duration", unit="ms", description="Server request time"
    )
    for value in (5, 50, 500, 7):
        duration.record(value, {"http.route": "/users/{id}", "http.response.status_code": 200})
    requests = meter.create_counter("otelbpf.requests", unit="{request}")
    requests.add(3, {"peer.tls": True})
    requests.add(4, {"peer.tls": True})
    meter.create_gauge("otelbpf.cpu.utilization", unit="1").set(0.75)

    backend_meter = backend_provider.get_meter("otelbpf.sql")
    backend_meter.create_counter("db.queries").add(2, {"db.system.name": "postgresql"})
    backend_meter.create_up_down_counter("db.connections").add(-2)

    assert frontend_provider.force_flush(timeout_millis=10_000)
    assert backend_provider.force_flush(timeout_millis=10_000)
    frontend_provider.shutdown()
    backend_provider.shutdown()


EXPECTED_POINTS = [
    ReceivedMetricPoint(
        name="db.connections",
        unit="",
        resource=BACKEND,
        kind="sum",
        attributes={},
        scope_name="otelbpf.sql",
        value=-2,
        is_monotonic=False,
        temporality="CUMULATIVE",
    ),
    ReceivedMetricPoint(
        name="db.queries",
        unit="",
        resource=BACKEND,
        kind="sum",
        attributes={"db.system.name": "postgresql"},
        scope_name="otelbpf.sql",
        value=2,
        is_monotonic=True,
        temporality="DELTA",
    ),
    ReceivedMetricPoint(
        name="http.server.request.duration",
        unit="ms",
        resource=FRONTEND,
        kind="histogram",
        attributes={"http.route": "/users/{id}", "http.response.status_code": 200},
        description="Server request time",
        scope_name="otelbpf.http",
        count=4,
        sum=562.0,
        bucket_counts=[0, 2, 1, 1],
        explicit_bounds=[0.0, 10.0, 100.0],
        min=5.0,
        max=500.0,
        temporality="CUMULATIVE",
    ),
    ReceivedMetricPoint(
        name="otelbpf.cpu.utilization",
        unit="1",
        resource=FRONTEND,
        kind="gauge",
        attributes={},
        scope_name="otelbpf.http",
        value=0.75,
    ),
    ReceivedMetricPoint(
        name="otelbpf.requests",
        unit="{request}",
        resource=FRONTEND,
        kind="sum",
        attributes={"peer.tls": True},
        scope_name="otelbpf.http",
        value=7,
        is_monotonic=True,
        temporality="CUMULATIVE",
    ),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_histogram_counter_gauge(receiver: OtlpReceiver, transport: str) -> None:
    export_metrics(transport, receiver)

    points = receiver.wait_for_metrics(len(EXPECTED_POINTS), timeout=5)
    for point in points:
        # Metric timestamps come from the SDK's clock: only their shape is pinned.
        assert point.time_ns > 0, point
        assert point.start_ns <= point.time_ns, point
    untimed = sorted(
        (dataclasses.replace(p, start_ns=0, time_ns=0) for p in points), key=lambda p: p.name
    )
    assert untimed == EXPECTED_POINTS
    assert isinstance(next(p for p in points if p.name == "otelbpf.requests").value, int)
    assert isinstance(next(p for p in points if p.kind == "gauge").value, float)
    assert receiver.requests == expected_requests(**{transport_key(transport, "metrics"): 2})
    assert len(receiver.metrics_requests()) == 2
    # Metrics do not leak into the span views.
    assert receiver.spans() == []
    assert receiver.resource_spans_per_request() == []


# ---------------------------------------------------------------------------
# Waiting
# ---------------------------------------------------------------------------


def test_wait_returns_what_it_has_on_timeout(receiver: OtlpReceiver) -> None:
    started = time.monotonic()
    assert receiver.wait_for_spans(1, timeout=0.05) == []
    assert receiver.wait_for_metrics(lambda points: False, timeout=0.05) == []
    assert time.monotonic() - started < 2


def test_wait_wakes_up_when_spans_arrive(receiver: OtlpReceiver) -> None:
    exporter = span_exporter("grpc", receiver)
    sender = threading.Timer(0.05, export_three_spans, args=(exporter,))
    sender.start()
    try:
        spans = receiver.wait_for_spans(
            lambda got: any(s.status_code == "ERROR" for s in got), timeout=10
        )
    finally:
        sender.join()
    assert [s.name for s in spans if s.status_code == "ERROR"] == ["GET"]


# ---------------------------------------------------------------------------
# Lifecycle and HTTP edge cases
# ---------------------------------------------------------------------------


def test_lifecycle() -> None:
    rx = OtlpReceiver()
    with pytest.raises(RuntimeError):
        _ = rx.grpc_endpoint
    with rx:
        assert rx.grpc_endpoint == f"http://127.0.0.1:{rx.grpc_port}"
        assert rx.http_endpoint == f"http://127.0.0.1:{rx.http_port}"
        assert rx.grpc_port != rx.http_port
        assert rx.grpc_port > 0 and rx.http_port > 0
        with pytest.raises(RuntimeError):
            rx.start()
        export_three_spans(span_exporter("http", rx))
    rx.stop()  # idempotent
    assert len(rx.spans()) == 3  # data outlives the servers


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def one_span_request() -> trace_service_pb2.ExportTraceServiceRequest:
    kv = common_pb2.KeyValue
    av = common_pb2.AnyValue
    span = trace_pb2.Span(
        trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        span_id=bytes.fromhex("b7ad6b7169203331"),
        name="raw",
        kind=trace_pb2.Span.SPAN_KIND_CONSUMER,
        start_time_unix_nano=10,
        end_time_unix_nano=25,
        attributes=[
            kv(key="bytes", value=av(bytes_value=b"\x00\x01")),
            kv(
                key="map",
                value=av(
                    kvlist_value=common_pb2.KeyValueList(
                        values=[kv(key="n", value=av(int_value=1))]
                    )
                ),
            ),
            kv(key="empty", value=av()),
        ],
    )
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[kv(key="service.name", value=av(string_value="raw"))]
                ),
                scope_spans=[trace_pb2.ScopeSpans(spans=[span])],
            )
        ]
    )


def test_http_gzip_post_by_hand(receiver: OtlpReceiver) -> None:
    body = gzip.compress(one_span_request().SerializeToString())
    status, headers, payload = post(
        receiver.http_endpoint + "/v1/traces",
        body,
        {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert status == 200
    assert headers["Content-Type"] == "application/x-protobuf"
    assert trace_service_pb2.ExportTraceServiceResponse.FromString(payload) == (
        trace_service_pb2.ExportTraceServiceResponse()
    )
    assert receiver.spans() == [
        ReceivedSpan(
            name="raw",
            kind="CONSUMER",
            trace_id="0af7651916cd43dd8448eb211c80319c",
            span_id="b7ad6b7169203331",
            parent_span_id="",
            start_ns=10,
            end_ns=25,
            attributes={"bytes": b"\x00\x01", "map": {"n": 1}, "empty": None},
            status_code="UNSET",
            status_message="",
            resource={"service.name": "raw"},
            scope_name="",
        )
    ]
    assert receiver.requests == expected_requests(http_traces=1)


def test_http_rejections(receiver: OtlpReceiver) -> None:
    body = one_span_request().SerializeToString()
    protobuf = {"Content-Type": "application/x-protobuf"}
    assert post(receiver.http_endpoint + "/v1/logs", body, protobuf)[0] == 404
    assert post(receiver.http_endpoint + "/", body, protobuf)[0] == 404
    json = {"Content-Type": "application/json"}
    assert post(receiver.http_endpoint + "/v1/traces", b"{}", json)[0] == 415
    assert post(receiver.http_endpoint + "/v1/traces", b"\xff\xff\xff", protobuf)[0] == 400
    not_gzip = {**protobuf, "Content-Encoding": "gzip"}
    assert post(receiver.http_endpoint + "/v1/metrics", body, not_gzip)[0] == 400
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(receiver.http_endpoint + "/v1/traces", timeout=5)
    with error.value:
        assert error.value.code == 405
        assert error.value.headers["Allow"] == "POST"
    assert receiver.spans() == []
    assert receiver.requests == expected_requests()


def test_decode_any_value_array_of_mixed() -> None:
    av = common_pb2.AnyValue
    value = av(
        array_value=common_pb2.ArrayValue(
            values=[
                av(string_value="a"),
                av(int_value=2),
                av(double_value=0.5),
                av(bool_value=False),
            ]
        )
    )
    assert decode_any_value(value) == ["a", 2, 0.5, False]


# ---------------------------------------------------------------------------
# Script mode
# ---------------------------------------------------------------------------


def test_script_prints_spans_as_they_arrive() -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.otlp_receiver"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("OTLP gRPC: http://127.0.0.1:"), lines
        assert lines[1].startswith("OTLP HTTP: http://127.0.0.1:"), lines
        grpc_endpoint = lines[0].split(": ", 1)[1].strip()
        exporter = GrpcSpanExporter(endpoint=grpc_endpoint, insecure=True, timeout=5)
        export_three_spans(exporter)
        printed = "".join(process.stdout.readline() for _ in range(9))
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "[frontend] SERVER   'GET /users/{id}' 5.000ms OK" in printed
    assert "[frontend] CLIENT   'GET' 2.000ms ERROR (connection reset by peer)" in printed
    assert "[backend] SERVER   'SELECT users' 1.000ms UNSET" in printed
    assert "parent=0000000000000001" in printed
    assert "grpc-traces': 1" in stderr


@pytest.mark.parametrize("keep_spans", [True, False])
@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_spans_counted_by_path_with_or_without_keeping_them(
    transport: str, keep_spans: bool
) -> None:
    """The benchmarks' receiver keeps no span: it decodes each request and counts its spans,
    by url.path, or by http.target (older instrumentations' name) where url.path is absent."""
    tracer_provider = TracerProvider(resource=Resource(FRONTEND), shutdown_on_exit=False)
    paths = ["/a"] * 5 + ["/b"] * 2
    with OtlpReceiver(keep_spans=keep_spans) as rx:
        processor = BatchSpanProcessor(span_exporter(transport, rx), max_export_batch_size=3)
        tracer_provider.add_span_processor(processor)
        tracer = tracer_provider.get_tracer("bench")
        for path in paths:
            tracer.start_span("GET", attributes={"url.path": path, "http.target": "/no"}).end()
        tracer.start_span("GET", attributes={"http.target": "/old"}).end()
        tracer.start_span("SELECT", attributes={"db.system.name": "postgresql"}).end()
        processor.force_flush()
        assert rx.span_count() == 9
        assert [rx.path_count(p) for p in ("/a", "/b", "/old", "/no")] == [5, 2, 1, 0]
        assert rx.requests[f"{transport}-traces"] == 3
        if keep_spans:
            assert len(rx.spans()) == 9
        else:
            with pytest.raises(RuntimeError, match="keeps none"):
                rx.spans()
        rx.clear()
        assert (rx.span_count(), rx.path_count("/a")) == (0, 0)
        processor.shutdown()
