"""Where telemetry goes: OTLP exporters built from the standard OpenTelemetry variables.

OTEL_EXPORTER_OTLP_{,TRACES_,METRICS_}ENDPOINT / _PROTOCOL / _HEADERS and friends are read by
the SDK's own exporters; --endpoint and --protocol override them. With no endpoint at all,
spans go to the console line printer and metrics stay in the agent. Two variables are read
here rather than by the SDK 1.45 exporters, which get them wrong: _TIMEOUT (milliseconds per
the specification; the exporters take it as seconds) and _INSECURE (an explicit insecure= would
override it, so one is passed only when the endpoint's scheme decides). OTEL_SDK_DISABLED=true
turns all export off: nothing goes to a collector or to the console.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from urllib.parse import urlparse

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TIMEOUT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.metrics.export import MetricExporter

from otelbpf.errors import SetupError
from otelbpf.export.span_batches import FinishedSpanExporter

log = logging.getLogger(__name__)

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
PROTOCOLS = (GRPC, HTTP_PROTOBUF)
GRPC_DEFAULT_PORT = 4317
DEFAULT_TIMEOUT_MS = 10000  # the specification's default for OTEL_EXPORTER_OTLP_TIMEOUT
# the user:password@ of an endpoint, with or without a scheme: kept out of what is logged
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?[^/?#]*@")


def sdk_disabled() -> bool:
    """OTEL_SDK_DISABLED=true: no signal is exported, as the SDK's own providers read it."""
    return os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"


def without_userinfo(endpoint: str) -> str:
    """The endpoint as it may be logged: https://tenant:secret@host/x is https://host/x."""
    return _USERINFO.sub(lambda match: match.group(1) or "", endpoint, count=1)


def _scheme(endpoint: str) -> str | None:
    # "collector:4317" has no scheme (urlparse would take "collector" for one)
    head, sep, _ = endpoint.partition("://")
    return head.lower() if sep else None


def _port(endpoint: str) -> int | None:
    # host:port alone is read as a host and a port, as gRPC endpoints are often written
    return urlparse(endpoint if _scheme(endpoint) else f"//{endpoint}").port


def _insecure(endpoint: str | None) -> bool | None:
    """What the endpoint's scheme says about TLS for gRPC: http:// none, https:// TLS. None
    otherwise, and the SDK reads OTEL_EXPORTER_OTLP_{,TRACES_,METRICS_}INSECURE itself."""
    scheme = _scheme(endpoint) if endpoint else None
    if scheme == "http":
        return True
    if scheme == "https":
        return False
    return None


def _timeout_s(signal_variable: str) -> float:
    """OTEL_EXPORTER_OTLP_{TRACES_,METRICS_,}TIMEOUT, in milliseconds as the specification has
    it, as the seconds the SDK's exporters take (unset, they would read the ms as seconds).

    Empty is unset. A value that is not a positive number is warned about and ignored, as the
    specification asks of an invalid value: the signal's variable gives way to the common one,
    and that to the default. Either is taken out of the agent's environment, where the SDK
    1.45 gRPC metric exporter would float() it, and fail, even when given timeout=.
    """
    for variable in (signal_variable, OTEL_EXPORTER_OTLP_TIMEOUT):
        text = os.environ.get(variable, "").strip()
        if not text:
            os.environ.pop(variable, None)
            continue
        try:
            milliseconds = float(text)
        except ValueError:
            milliseconds = math.nan
        if math.isfinite(milliseconds) and milliseconds > 0:
            return milliseconds / 1000
        log.warning(
            "%s=%r is not a positive number of milliseconds: ignored (default %d)",
            variable,
            text,
            DEFAULT_TIMEOUT_MS,
        )
        del os.environ[variable]
    return DEFAULT_TIMEOUT_MS / 1000


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
        port = _port(endpoint) if endpoint else None
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
    """The destination of 'traces' or 'metrics', or None when nothing is configured or
    OTEL_SDK_DISABLED is true."""
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
    if sdk_disabled():
        return None
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
    timeout = _timeout_s(OTEL_EXPORTER_OTLP_TRACES_TIMEOUT)
    if destination.protocol == GRPC:
        from otelbpf.export.otlp_encoding import GrpcSpanExporter

        return GrpcSpanExporter(
            endpoint=destination.endpoint,
            insecure=_insecure(destination.endpoint),
            timeout=timeout,
        )
    from otelbpf.export.otlp_encoding import HttpSpanExporter

    return HttpSpanExporter(endpoint=destination.endpoint, timeout=timeout)


def metric_exporter(destination: Destination) -> MetricExporter:
    timeout = _timeout_s(OTEL_EXPORTER_OTLP_METRICS_TIMEOUT)
    if destination.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(
            endpoint=destination.endpoint,
            insecure=_insecure(destination.endpoint),
            timeout=timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    return Http(endpoint=destination.endpoint, timeout=timeout)


def describe(destination: Destination | None, signal: str) -> str:
    if sdk_disabled():
        # the agent's one start-up line about export (the agent joins traces' and metrics')
        still = "; requests are still traced and counted" if signal == "traces" else ""
        return f"{signal}: not exported (OTEL_SDK_DISABLED=true{still})"
    if destination is None:
        return f"{signal}: console" if signal == "traces" else f"{signal}: not exported"
    where = (
        without_userinfo(destination.endpoint)
        if destination.endpoint
        else "endpoint from OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return f"{signal}: OTLP {destination.protocol} to {where}"
