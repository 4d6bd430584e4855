"""A real, in-process OTLP receiver for the end-to-end tests.

``OtlpReceiver`` stands where an OpenTelemetry Collector would: the agent (or any
OTLP exporter) is pointed at it and sends genuine OTLP traffic, which is decoded
with the opentelemetry-proto messages exactly as a collector would decode it. It
is *not* a mock of the exporter: the exporter, its serialisation, its transport
(gRPC or HTTP/protobuf, optionally gzip-compressed) and the wire format are all
exercised for real.

It serves both OTLP transports on 127.0.0.1, each on a free port chosen by the
kernel:

* gRPC: ``opentelemetry.proto.collector.trace.v1.TraceService/Export`` and
  ``opentelemetry.proto.collector.metrics.v1.MetricsService/Export``;
* HTTP: ``POST /v1/traces`` and ``POST /v1/metrics`` with
  ``Content-Type: application/x-protobuf`` (``Content-Encoding: gzip`` or
  ``deflate`` accepted).

Everything received is stored thread-safely and flattened into plain frozen
dataclasses (``ReceivedSpan``, ``ReceivedMetricPoint``) so tests can assert exact
values and get readable diffs. ``wait_for_spans``/``wait_for_metrics`` block until
a condition holds or a timeout passes, and never raise: on timeout they return
what arrived, and the test's own assertion reports the difference.

Run ``python -m tests.otlp_receiver`` to get a receiver that prints spans (and,
with ``--metrics``, metric points) as they arrive.
"""

from __future__ import annotations

import argparse
import gzip
import signal
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "AttributeValue",
    "OtlpReceiver",
    "ReceivedMetricPoint",
    "ReceivedSpan",
    "decode_any_value",
    "decode_attributes",
    "main",
]

HOST = "127.0.0.1"
TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
# Large enough for any batch the SDK produces (its HTTP exporter caps requests at 64 MiB).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
REQUEST_KINDS = ("grpc-traces", "grpc-metrics", "http-traces", "http-metrics")

AttributeValue = Any
"""Decoded ``AnyValue``: str, int, float, bool, bytes, list, dict, or None when unset."""


# ---------------------------------------------------------------------------
# Flattened views
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as received, with ids in lower-case hex and enums as short names."""

    name: str
    kind: str  # "SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER" (or "UNSPECIFIED")
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # 16 hex digits, "" for a root span
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue]
    status_code: str  # "UNSET", "OK", "ERROR"
    status_message: str
    resource: dict[str, AttributeValue]
    scope_name: str
    scope_version: str = ""
    trace_state: str = ""  # W3C tracestate, "" when none

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True)
class ReceivedMetricPoint:
    """One data point of one metric, with its metric's and resource's identity.

    ``kind`` is "histogram", "sum" or "gauge" (also "exponential_histogram" and
    "summary", reduced to count/sum). Histogram fields are None for sums and
    gauges; ``value`` is None for histograms; ``is_monotonic`` is set for sums only;
    ``temporality`` ("CUMULATIVE", "DELTA", "UNSPECIFIED") for sums and histograms.
    """

    name: str
    unit: str
    resource: dict[str, AttributeValue]
    kind: str
    attributes: dict[str, AttributeValue]
    description: str = ""
    scope_name: str = ""
    start_ns: int = 0
    time_ns: int = 0
    count: int | None = None
    sum: float | None = None
    bucket_counts: list[int] | None = None
    explicit_bounds: list[float] | None = None
    min: float | None = None
    max: float | None = None
    value: int | float | None = None
    is_monotonic: bool | None = None
    temporality: str | None = None


def decode_any_value(value: common_pb2.AnyValue) -> AttributeValue:
    """Turn an OTLP ``AnyValue`` into the matching Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [decode_any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    # string_value, bool_value, int_value, double_value, bytes_value
    return getattr(value, which)


def decode_attributes(attributes: Iterable[common_pb2.KeyValue]) -> dict[str, AttributeValue]:
    return {kv.key: decode_any_value(kv.value) for kv in attributes}


def _strip_prefix(name: str, prefix: str) -> str:
    return name[len(prefix) :] if name.startswith(prefix) else name


def _span_kind_name(kind: int) -> str:
    return _strip_prefix(trace_pb2.Span.SpanKind.Name(kind), "SPAN_KIND_")


def _status_code_name(code: int) -> str:
    return _strip_prefix(trace_pb2.Status.StatusCode.Name(code), "STATUS_CODE_")


def _temporality_name(temporality: int) -> str:
    return _strip_prefix(
        metrics_pb2.AggregationTemporality.Name(temporality), "AGGREGATION_TEMPORALITY_"
    )


def _count_spans(
    request: trace_service_pb2.ExportTraceServiceRequest,
) -> tuple[int, dict[str, int]]:
    """How many spans the request holds, and how many per url.path (or http.target, the name
    older instrumentations send)."""
    total = 0
    paths: dict[str, int] = {}
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                total += 1
                path = target = None
                for kv in span.attributes:
                    if kv.key == "url.path":
                        path = kv.value.string_value
                        break
                    if kv.key == "http.target":
                        target = kv.value.string_value
                if path is None:
                    path = target
                if path is not None:
                    paths[path] = paths.get(path, 0) + 1
    return total, paths


def _flatten_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = decode_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=_span_kind_name(span.kind),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=decode_attributes(span.attributes),
                        status_code=_status_code_name(span.status.code),
                        status_message=span.status.message,
                        resource=dict(resource),
                        scope_name=scope_spans.scope.name,
                        scope_version=scope_spans.scope.version,
                        trace_state=span.trace_state,
                    )
                )
    return spans


def _number_value(point: metrics_pb2.NumberDataPoint) -> int | float | None:
    which = point.WhichOneof("value")
    return None if which is None else getattr(point, which)


def _flatten_metric(
    metric: metrics_pb2.Metric, resource: Mapping[str, AttributeValue], scope_name: str
) -> list[ReceivedMetricPoint]:
    common: dict[str, Any] = {
        "name": metric.name,
        "unit": metric.unit,
        "description": metric.description,
        "scope_name": scope_name,
    }
    which = metric.WhichOneof("data")
    points: list[ReceivedMetricPoint] = []
    if which in ("sum", "gauge"):
        data = getattr(metric, which)
        extra: dict[str, Any] = {}
        if which == "sum":
            extra = {
                "is_monotonic": metric.sum.is_monotonic,
                "temporality": _temporality_name(metric.sum.aggregation_temporality),
            }
        for point in data.data_points:
            points.append(
                ReceivedMetricPoint(
                    **common,
                    kind=which,
                    resource=dict(resource),
                    attributes=decode_attributes(point.attributes),
                    start_ns=point.start_time_unix_nano,
                    time_ns=point.time_unix_nano,
                    value=_number_value(point),
                    **extra,
                )
            )
    elif which == "histogram":
        temporality = _temporality_name(metric.histogram.aggregation_temporality)
        for hpoint in metric.histogram.data_points:
            points.append(
                ReceivedMetricPoint(
                    **common,
                    kind="histogram",
                    resource=dict(resource),
                    attributes=decode_attributes(hpoint.attributes),
                    start_ns=hpoint.start_time_unix_nano,
                    time_ns=hpoint.time_unix_nano,
                    count=hpoint.count,
                    sum=hpoint.sum if hpoint.HasField("sum") else None,
                    bucket_counts=list(hpoint.bucket_counts),
                    explicit_bounds=list(hpoint.explicit_bounds),
                    min=hpoint.min if hpoint.HasField("min") else None,
                    max=hpoint.max if hpoint.HasField("max") else None,
                    temporality=temporality,
                )
            )
    elif which == "exponential_histogram":
        temporality = _temporality_name(metric.exponential_histogram.aggregation_temporality)
        for epoint in metric.exponential_histogram.data_points:
            points.append(
                ReceivedMetricPoint(
                    **common,
                    kind="exponential_histogram",
                    resource=dict(resource),
                    attributes=decode_attributes(epoint.attributes),
                    start_ns=epoint.start_time_unix_nano,
                    time_ns=epoint.time_unix_nano,
                    count=epoint.count,
                    sum=epoint.sum if epoint.HasField("sum") else None,
                    min=epoint.min if epoint.HasField("min") else None,
                    max=epoint.max if epoint.HasField("max") else None,
                    temporality=temporality,
                )
            )
    elif which == "summary":
        for spoint in metric.summary.data_points:
            points.append(
                ReceivedMetricPoint(
                    **common,
                    kind="summary",
                    resource=dict(resource),
                    attributes=decode_attributes(spoint.attributes),
                    start_ns=spoint.start_time_unix_nano,
                    time_ns=spoint.time_unix_nano,
                    count=spoint.count,
                    sum=spoint.sum,
                )
            )
    return points


def _flatten_metrics(
    request: metrics_service_pb2.ExportMetricsServiceRequest,
) -> list[ReceivedMetricPoint]:
    points: list[ReceivedMetricPoint] = []
    for resource_metrics in request.resource_metrics:
        resource = decode_attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points.extend(_flatten_metric(metric, resource, scope_metrics.scope.name))
    return points


def _as_predicate(
    predicate: Callable[[list[Any]], bool] | int,
) -> Callable[[list[Any]], bool]:
    if callable(predicate):
        return predicate
    minimum = int(predicate)
    return lambda items: len(items) >= minimum


# ---------------------------------------------------------------------------
# Transports
# ---------------------------------------------------------------------------


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(  # noqa: N802 - name fixed by the generated servicer
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receiver._ingest_traces(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(  # noqa: N802 - name fixed by the generated servicer
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.ServicerContext,
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self._receiver._ingest_metrics(request, "grpc")
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _OtlpHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    # Exporters keep HTTP/1.1 connections open; do not wait for them on close.
    block_on_close = False

    def __init__(self, address: tuple[str, int], receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _OtlpHttpHandler)


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _OtlpHttpServer
    # Idle keep-alive connections are dropped after this many seconds.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Keep test output quiet."""

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self._send_status(HTTPStatus.BAD_REQUEST, "malformed request body")
            self.close_connection = True
            return
        path = urlsplit(self.path).path.rstrip("/")
        if path == TRACES_PATH:
            signal_name = "traces"
        elif path == METRICS_PATH:
            signal_name = "metrics"
        else:
            self._send_status(HTTPStatus.NOT_FOUND, f"no OTLP endpoint at {self.path}")
            return
        content_type = self.headers.get_content_type()
        if content_type != PROTOBUF_CONTENT_TYPE:
            self._send_status(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"unsupported Content-Type {content_type!r}; expected {PROTOBUF_CONTENT_TYPE}",
            )
            return
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        try:
            payload = _decompress(body, encoding)
        except ValueError as exc:
            self._send_status(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, str(exc))
            return
        except (OSError, EOFError, zlib.error) as exc:
            self._send_status(HTTPStatus.BAD_REQUEST, f"cannot decompress {encoding}: {exc}")
            return
        response: Message
        try:
            if signal_name == "traces":
                traces = trace_service_pb2.ExportTraceServiceRequest.FromString(payload)
                self.server.receiver._ingest_traces(traces, "http")
                response = trace_service_pb2.ExportTraceServiceResponse()
            else:
                metrics = metrics_service_pb2.ExportMetricsServiceRequest.FromString(payload)
                self.server.receiver._ingest_metrics(metrics, "http")
                response = metrics_service_pb2.ExportMetricsServiceResponse()
        except DecodeError as exc:
            self._send_status(HTTPStatus.BAD_REQUEST, f"cannot decode protobuf: {exc}")
            return
        self._send(HTTPStatus.OK, response.SerializeToString())

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        path = urlsplit(self.path).path.rstrip("/")
        if path in (TRACES_PATH, METRICS_PATH):
            self._send_status(HTTPStatus.METHOD_NOT_ALLOWED, "use POST", allow="POST")
        else:
            self._send_status(HTTPStatus.NOT_FOUND, f"no OTLP endpoint at {self.path}")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # discard trailers
                    return b"".join(chunks)
                if sum(map(len, chunks)) + size > MAX_MESSAGE_BYTES:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_MESSAGE_BYTES:
            raise ValueError(f"bad Content-Length {length}")
        return self.rfile.read(length)

    def _send_status(self, status: HTTPStatus, message: str, **headers: str) -> None:
        # OTLP/HTTP: error bodies are google.rpc.Status messages in the request's encoding.
        body = status_pb2.Status(code=_GRPC_CODE_FOR_HTTP.get(status, 2), message=message)
        self._send(status, body.SerializeToString(), **headers)

    def _send(self, status: HTTPStatus, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", PROTOBUF_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-").title(), value)
        self.end_headers()
        self.wfile.write(body)


_GRPC_CODE_FOR_HTTP: dict[HTTPStatus, int] = {
    HTTPStatus.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT.value[0],
    HTTPStatus.NOT_FOUND: grpc.StatusCode.UNIMPLEMENTED.value[0],
    HTTPStatus.METHOD_NOT_ALLOWED: grpc.StatusCode.UNIMPLEMENTED.value[0],
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: grpc.StatusCode.INVALID_ARGUMENT.value[0],
}


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        # RFC 9110 "deflate" is zlib-wrapped; tolerate raw deflate streams too.
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


# ---------------------------------------------------------------------------
# The receiver
# ---------------------------------------------------------------------------


class OtlpReceiver:
    """OTLP/gRPC + OTLP/HTTP receiver storing every span and metric point it gets.

    Use as a context manager (``with OtlpReceiver() as rx: ...``) or call
    ``start()``/``stop()``. Ports default to 0 (a free port, read back after
    binding). ``on_spans``/``on_metrics`` are called, from the transport's
    thread, with the flattened content of each request as it arrives.
    """

    def __init__(
        self,
        *,
        host: str = HOST,
        grpc_port: int = 0,
        http_port: int = 0,
        on_spans: Callable[[list[ReceivedSpan]], None] | None = None,
        on_metrics: Callable[[list[ReceivedMetricPoint]], None] | None = None,
        keep_spans: bool = True,
    ) -> None:
        self._host = host
        self._requested_grpc_port = grpc_port
        self._requested_http_port = http_port
        self._on_spans = on_spans
        self._on_metrics = on_metrics
        # False: each trace request is decoded and its spans counted by path, as a collector
        # passing them on would touch them, and nothing is kept (the benchmarks' receiver:
        # turning every span into Python objects costs 25 us a span, ten times the decode)
        self._keep_spans = keep_spans
        self._span_count = 0
        self._path_counts: dict[str, int] = {}

        # Condition over an RLock: predicates passed to wait_for_* may call back in.
        self._cond = threading.Condition(threading.RLock())
        self._trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._metrics_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._spans: list[ReceivedSpan] = []
        self._metric_points: list[ReceivedMetricPoint] = []
        self._resource_groups: list[list[dict[str, AttributeValue]]] = []
        self._requests: dict[str, int] = dict.fromkeys(REQUEST_KINDS, 0)

        self._grpc_server: grpc.Server | None = None
        self._http_server: _OtlpHttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc_port: int | None = None
        self._http_port: int | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        if self._grpc_server is not None or self._http_server is not None:
            raise RuntimeError("OtlpReceiver already started")
        try:
            self._start_grpc()
            self._start_http()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_grpc(self) -> None:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-grpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _MetricsServicer(self), server
        )
        port = server.add_insecure_port(f"{self._host}:{self._requested_grpc_port}")
        if port == 0:
            raise RuntimeError(
                f"cannot bind gRPC receiver on {self._host}:{self._requested_grpc_port}"
            )
        server.start()
        self._grpc_server = server
        self._grpc_port = port

    def _start_http(self) -> None:
        server = _OtlpHttpServer((self._host, self._requested_http_port), self)
        self._http_server = server
        self._http_port = server.server_address[1]
        self._http_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-http",
            daemon=True,
        )
        self._http_thread.start()

    def stop(self, grace: float = 1.0) -> None:
        """Stop both transports; received data stays available. Idempotent."""
        grpc_server, self._grpc_server = self._grpc_server, None
        http_server, self._http_server = self._http_server, None
        http_thread, self._http_thread = self._http_thread, None
        if grpc_server is not None:
            grpc_server.stop(grace).wait()
        if http_server is not None:
            if http_thread is not None:
                http_server.shutdown()
                http_thread.join()
            http_server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- endpoints ---------------------------------------------------------

    @property
    def grpc_port(self) -> int:
        if self._grpc_port is None:
            raise RuntimeError("OtlpReceiver not started")
        return self._grpc_port

    @property
    def http_port(self) -> int:
        if self._http_port is None:
            raise RuntimeError("OtlpReceiver not started")
        return self._http_port

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, for OTLP gRPC exporters."""
        return f"http://{self._host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: OTLP/HTTP base URL (append /v1/traces, /v1/metrics)."""
        return f"http://{self._host}:{self.http_port}"

    @property
    def http_traces_url(self) -> str:
        return self.http_endpoint + TRACES_PATH

    @property
    def http_metrics_url(self) -> str:
        return self.http_endpoint + METRICS_PATH

    # -- ingestion (called from transport threads) --------------------------

    def _ingest_traces(
        self, request: trace_service_pb2.ExportTraceServiceRequest, transport: str
    ) -> None:
        count, paths = _count_spans(request)
        with self._cond:
            self._span_count += count
            for path, n in paths.items():
                self._path_counts[path] = self._path_counts.get(path, 0) + n
            if not self._keep_spans:
                self._requests[f"{transport}-traces"] += 1
                self._cond.notify_all()
                return
        spans = _flatten_spans(request)
        groups = [decode_attributes(rs.resource.attributes) for rs in request.resource_spans]
        with self._cond:
            self._requests[f"{transport}-traces"] += 1
            self._trace_requests.append(request)
            self._spans.extend(spans)
            self._resource_groups.append(groups)
            self._cond.notify_all()
        if self._on_spans is not None and spans:
            self._on_spans(spans)

    def _ingest_metrics(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, transport: str
    ) -> None:
        points = _flatten_metrics(request)
        with self._cond:
            self._requests[f"{transport}-metrics"] += 1
            self._metrics_requests.append(request)
            self._metric_points.extend(points)
            self._cond.notify_all()
        if self._on_metrics is not None and points:
            self._on_metrics(points)

    # -- queries -----------------------------------------------------------

    @property
    def requests(self) -> dict[str, int]:
        """Export requests received so far, keyed "grpc-traces", "http-metrics", ..."""
        with self._cond:
            return dict(self._requests)

    def spans(self) -> list[ReceivedSpan]:
        if not self._keep_spans:
            raise RuntimeError("this receiver counts spans and keeps none (keep_spans=False)")
        with self._cond:
            return list(self._spans)

    def span_count(self) -> int:
        """Spans received so far (in either mode)."""
        with self._cond:
            return self._span_count

    def path_count(self, path: str) -> int:
        """Spans received so far whose url.path (or the older http.target) is path."""
        with self._cond:
            return self._path_counts.get(path, 0)

    def metrics(self) -> list[ReceivedMetricPoint]:
        with self._cond:
            return list(self._metric_points)

    def resource_spans_per_request(self) -> list[list[dict[str, AttributeValue]]]:
        """For each trace export request, the resource attributes of its ResourceSpans."""
        with self._cond:
            return [[dict(resource) for resource in group] for group in self._resource_groups]

    def trace_requests(self) -> list[trace_service_pb2.ExportTraceServiceRequest]:
        """Copies of the raw trace export requests, in arrival order."""
        with self._cond:
            requests = list(self._trace_requests)
        return [_copy(request) for request in requests]

    def metrics_requests(self) -> list[metrics_service_pb2.ExportMetricsServiceRequest]:
        """Copies of the raw metrics export requests, in arrival order."""
        with self._cond:
            requests = list(self._metrics_requests)
        return [_copy(request) for request in requests]

    def wait_for_spans(
        self,
        predicate: Callable[[list[ReceivedSpan]], bool] | int,
        timeout: float = 10.0,
    ) -> list[ReceivedSpan]:
        """Wait until ``predicate(spans)`` holds (an int N: at least N spans).

        Returns the spans received so far, whether or not the predicate came true
        before ``timeout`` seconds: the caller's assertion reports the mismatch.
        """
        return self._wait_for(self._spans, _as_predicate(predicate), timeout)

    def wait_for_metrics(
        self,
        predicate: Callable[[list[ReceivedMetricPoint]], bool] | int,
        timeout: float = 10.0,
    ) -> list[ReceivedMetricPoint]:
        """Like ``wait_for_spans``, over the flattened metric points."""
        return self._wait_for(self._metric_points, _as_predicate(predicate), timeout)

    def _wait_for(
        self, items: list[Any], check: Callable[[list[Any]], bool], timeout: float
    ) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                snapshot = list(items)
                if check(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return snapshot
                # Woken on every request; re-check at least every 100 ms in case the
                # predicate also depends on state outside the receiver.
                self._cond.wait(min(remaining, 0.1))

    def clear(self) -> None:
        """Forget everything received, including the request counters."""
        with self._cond:
            self._trace_requests.clear()
            self._metrics_requests.clear()
            self._spans.clear()
            self._metric_points.clear()
            self._resource_groups.clear()
            self._requests = dict.fromkeys(REQUEST_KINDS, 0)
            self._span_count = 0
            self._path_counts.clear()


_M = TypeVar("_M", bound=Message)


def _copy(message: _M) -> _M:
    duplicate = type(message)()
    duplicate.CopyFrom(message)
    return duplicate


# ---------------------------------------------------------------------------
# Script
# ---------------------------------------------------------------------------


def _format_value(value: AttributeValue) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _format_span(span: ReceivedSpan) -> str:
    service = span.resource.get("service.name", "?")
    parent = span.parent_span_id or "-"
    status = span.status_code + (f" ({span.status_message})" if span.status_message else "")
    attributes = " ".join(f"{k}={_format_value(v)}" for k, v in sorted(span.attributes.items()))
    return (
        f"[{service}] {span.kind:<8} {span.name!r} {span.duration_ns / 1e6:.3f}ms {status}\n"
        f"    trace={span.trace_id} span={span.span_id} parent={parent} "
        f"scope={span.scope_name or '-'}\n"
        f"    {attributes}"
    )


def _format_point(point: ReceivedMetricPoint) -> str:
    service = point.resource.get("service.name", "?")
    attributes = " ".join(f"{k}={_format_value(v)}" for k, v in sorted(point.attributes.items()))
    if point.kind == "histogram":
        data = (
            f"count={point.count} sum={point.sum} bounds={point.explicit_bounds} "
            f"buckets={point.bucket_counts}"
        )
    elif point.value is not None:
        data = f"value={point.value}"
    else:
        data = f"count={point.count} sum={point.sum}"
    return f"[{service}] {point.kind} {point.name} ({point.unit or '-'}) {data} {{{attributes}}}"


def _print_spans(spans: Sequence[ReceivedSpan]) -> None:
    for span in spans:
        print(_format_span(span), flush=True)


def _print_points(points: Sequence[ReceivedMetricPoint]) -> None:
    for point in points:
        print(_format_point(point), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.otlp_receiver",
        description="Run an OTLP receiver (gRPC + HTTP/protobuf) and print what arrives.",
    )
    parser.add_argument("--host", default=HOST, help="address to bind (default %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=0, help="0: pick a free port")
    parser.add_argument("--http-port", type=int, default=0, help="0: pick a free port")
    parser.add_argument("--metrics", action="store_true", help="print metric points too")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    receiver = OtlpReceiver(
        host=args.host,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        on_spans=_print_spans,
        on_metrics=_print_points if args.metrics else None,
    )
    with receiver:
        print(f"OTLP gRPC: {receiver.grpc_endpoint}", flush=True)
        print(f"OTLP HTTP: {receiver.http_endpoint} (/v1/traces, /v1/metrics)", flush=True)
        print("Ctrl-C to stop.", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        print(f"requests: {receiver.requests}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
