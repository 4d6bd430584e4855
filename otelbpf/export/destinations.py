"""Where telemetry goes: OTLP exporters built from the standard OpenTelemetry variables.

OTEL_EXPORTER_OTLP_{,TRACES_,METRICS_}ENDPOINT / _PROTOCOL / _HEADERS and friends are read by
the SDK's own exporters; --endpoint and --protocol override them. With no endpoint at all,
spans go to the console line printer and metrics stay in the agent.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from urllib.parse import urlparse

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
)
from opentelemetry.sdk.metrics.export import MetricExporter

from otelbpf.errors import SetupError
from otelbpf.export.span_batches import FinishedSpanExporter

log = logging.getLogger(__name__)

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
PROTOCOLS = (GRPC, HTTP_PROTOBUF)
GRPC_DEFAULT_PORT = 4317


@dataclass(frozen=True)
class Destination:
    """One signal's way out: endpoint None means the OTLP exporter's own default."""

    protocol: str
    endpoint: str | None


def _protocol(signal_variable: str, endpoint: str | None, forced: str | None) -> str:
    protocol = (
        forced or os.environ.get(signal_variable) or os.environ.get(OTEL_EXPORTER_OTLP_PROTOCOL)
    )
    if not protocol:
        # Collectors listen for gRPC on 4317 and HTTP on 4318: guess from the port as Beyla does.
        port = urlparse(endpoint).port if endpoint else None
        protocol = GRPC if port == GRPC_DEFAULT_PORT else HTTP_PROTOBUF
    if protocol not in PROTOCOLS:
        raise SetupError(
            f"unknown OTLP protocol {protocol!r}",
            f"use one of {', '.join(PROTOCOLS)} (--protocol or OTEL_EXPORTER_OTLP_PROTOCOL)",
        )
    return protocol


def _signal_endpoint(protocol: str, base: str, path: str) -> str:
    # The generic endpoint is a base URL; for http/protobuf each signal has its own path.
    return base if protocol == GRPC else base.rstrip("/") + path


def resolve(
    signal: str, endpoint_override: str | None, protocol_override: str | None
) -> Destination | None:
    """The destination of 'traces' or 'metrics', or None when nothing is configured."""
    signal_endpoint_var, signal_protocol_var, path = {
        "traces": (
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
            OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
            "/v1/traces",
        ),
        "metrics": (
            OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
            OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
            "/v1/metrics",
        ),
    }[signal]
    if endpoint_override:
        protocol = _protocol(signal_protocol_var, endpoint_override, protocol_override)
        return Destination(protocol, _signal_endpoint(protocol, endpoint_override, path))
    specific = os.environ.get(signal_endpoint_var)
    generic = os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
    if not specific and not generic:
        return None
    protocol = _protocol(signal_protocol_var, specific or generic, protocol_override)
    if specific:
        return Destination(protocol, specific)  # a signal endpoint is used as given
    return Destination(protocol, None)  # the exporter appends the signal path itself


def span_exporter(destination: Destination) -> FinishedSpanExporter:
    if destination.protocol == GRPC:
        from otelbpf.export.otlp_encoding import GrpcSpanExporter

        # a plain http:// endpoint means no TLS for gRPC as well
        insecure = destination.endpoint.startswith("http://") if destination.endpoint else None
        return GrpcSpanExporter(endpoint=destination.endpoint, insecure=insecure)
    from otelbpf.export.otlp_encoding import HttpSpanExporter

    return HttpSpanExporter(endpoint=destination.endpoint)


def metric_exporter(destination: Destination) -> MetricExporter:
    if destination.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        insecure = destination.endpoint.startswith("http://") if destination.endpoint else None
        return OTLPMetricExporter(endpoint=destination.endpoint, insecure=insecure)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http(endpoint=destination.endpoint)


def describe(destination: Destination | None, signal: str) -> str:
    if destination is None:
        return f"{signal}: console" if signal == "traces" else f"{signal}: not exported"
    where = destination.endpoint or "endpoint from OTEL_EXPORTER_OTLP_ENDPOINT"
    return f"{signal}: OTLP {destination.protocol} to {where}"
