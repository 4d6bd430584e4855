"""Where telemetry goes (OTEL_EXPORTER_OTLP_* and the CLI overrides), and the console line."""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind

from otelbpf.errors import SetupError
from otelbpf.export import destinations
from otelbpf.export.console import ConsoleLineExporter, format_span
from otelbpf.export.destinations import GRPC, HTTP_PROTOBUF, Destination, resolve
from otelbpf.export.finished_spans import FinishedSpan
from tests.otlp_receiver import OtlpReceiver
from tests.unit.test_telemetry import record


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_") or name.upper().endswith("_PROXY"):
            monkeypatch.delenv(name)


SIGNALS = ["traces", "metrics"]


@pytest.mark.parametrize("signal", SIGNALS)
def test_nothing_configured_is_none(signal: str) -> None:
    assert resolve(signal, None, None) is None
    assert resolve(signal, "", None) is None
    assert resolve(signal, None, GRPC) is None  # a protocol alone says nowhere to send


@pytest.mark.parametrize("signal", SIGNALS)
def test_generic_endpoint_left_to_the_exporter(
    signal: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    # the SDK exporter reads the generic endpoint itself and appends the signal's path
    assert resolve(signal, None, None) == Destination(HTTP_PROTOBUF, None)


@pytest.mark.parametrize("signal", SIGNALS)
def test_generic_endpoint_on_4317_is_grpc(signal: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert resolve(signal, None, None) == Destination(GRPC, None)


def test_signal_endpoint_used_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://tempo:4318/custom/traces")
    assert resolve("traces", None, None) == Destination(
        HTTP_PROTOBUF, "http://tempo:4318/custom/traces"
    )
    # metrics have no signal endpoint: the generic one, whose port says gRPC
    assert resolve("metrics", None, None) == Destination(GRPC, None)


def test_signal_endpoint_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://prom:4317")
    assert resolve("metrics", None, None) == Destination(GRPC, "http://prom:4317")
    assert resolve("traces", None, None) is None


@pytest.mark.parametrize(
    ("override", "protocol", "expected"),
    [
        (
            "http://localhost:4318",
            None,
            Destination(HTTP_PROTOBUF, "http://localhost:4318/v1/traces"),
        ),
        (
            "http://localhost:4318/",
            None,
            Destination(HTTP_PROTOBUF, "http://localhost:4318/v1/traces"),
        ),
        ("http://localhost:4317", None, Destination(GRPC, "http://localhost:4317")),
        ("http://localhost:9999", GRPC, Destination(GRPC, "http://localhost:9999")),
        (
            "http://localhost:4317",
            HTTP_PROTOBUF,
            Destination(HTTP_PROTOBUF, "http://localhost:4317/v1/traces"),
        ),
    ],
)
def test_endpoint_override_for_traces(
    override: str, protocol: str | None, expected: Destination
) -> None:
    assert resolve("traces", override, protocol) == expected


def test_endpoint_override_for_metrics_and_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://ignored-too:4317")
    assert resolve("metrics", "http://collector:4318", None) == Destination(
        HTTP_PROTOBUF, "http://collector:4318/v1/metrics"
    )


def test_protocol_from_env_beats_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert resolve("traces", "http://collector:4318", None) == Destination(
        GRPC, "http://collector:4318"
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert resolve("metrics", None, None) == Destination(GRPC, None)


def test_per_signal_protocol_beats_the_generic_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    assert resolve("traces", None, None) == Destination(HTTP_PROTOBUF, None)
    assert resolve("metrics", None, None) == Destination(GRPC, None)


def test_protocol_override_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    assert resolve("traces", None, HTTP_PROTOBUF) == Destination(HTTP_PROTOBUF, None)


def test_port_guess_without_a_port_is_http(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example.com")
    assert resolve("traces", None, None) == Destination(HTTP_PROTOBUF, None)


@pytest.mark.parametrize("where", ["env", "signal-env", "override"])
def test_unknown_protocol_is_a_setup_error(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    forced = None
    if where == "env":
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    elif where == "signal-env":
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    else:
        forced = "http/json"
    with pytest.raises(SetupError) as raised:
        resolve("traces", None, forced)
    assert raised.value.message == "unknown OTLP protocol 'http/json'"
    assert raised.value.fix == (
        "use one of grpc, http/protobuf (--protocol or OTEL_EXPORTER_OTLP_PROTOCOL)"
    )


def test_describe() -> None:
    assert destinations.describe(None, "traces") == "traces: console"
    assert destinations.describe(None, "metrics") == "metrics: not exported"
    assert (
        destinations.describe(Destination(GRPC, "http://c:4317"), "traces")
        == "traces: OTLP grpc to http://c:4317"
    )
    assert (
        destinations.describe(Destination(HTTP_PROTOBUF, None), "metrics")
        == "metrics: OTLP http/protobuf to endpoint from OTEL_EXPORTER_OTLP_ENDPOINT"
    )


def test_exporters_get_the_endpoint() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetrics,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    http = destinations.span_exporter(Destination(HTTP_PROTOBUF, "http://c:4318/v1/traces"))
    assert isinstance(http, Http)
    assert http._endpoint == "http://c:4318/v1/traces"
    grpc_exporter = destinations.span_exporter(Destination(GRPC, "http://c:4317"))
    assert isinstance(grpc_exporter, Grpc)
    grpc_exporter.shutdown()
    metrics = destinations.metric_exporter(Destination(HTTP_PROTOBUF, "http://c:4318/v1/metrics"))
    assert isinstance(metrics, HttpMetrics)
    assert metrics._endpoint == "http://c:4318/v1/metrics"


# ---------------------------------------------------------------- the console line

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
START = int(datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC).timestamp()) * 10**9 + 678_901_000


def finished_span(
    name: str,
    kind: SpanKind,
    attributes: dict,
    duration_ns: int,
    *,
    error: bool = False,
    resource: dict | None = None,
) -> FinishedSpan:
    return FinishedSpan(
        record=record(name, kind, START, duration_ns, attributes, is_error=error),
        resource=Resource({"service.name": "checkout"} if resource is None else resource),
        trace_id=TRACE_ID,
        span_id=0x00F067AA0BA902B7,
        parent_span_id=None,
        trace_state=None,
    )


def test_console_line_server_error() -> None:
    span = finished_span(
        "GET /users/{id}",
        SpanKind.SERVER,
        {"http.request.method": "GET", "url.path": "/users/42", "http.response.status_code": 500},
        12_345_678,
        error=True,
    )
    assert format_span(span) == (
        "2024-01-02T03:04:05.678Z checkout SERVER GET /users/42 500 12.35ms "
        "trace=0af7651916cd43dd8448eb211c80319c ERROR"
    )


def test_console_line_client() -> None:
    span = finished_span(
        "POST /pay",
        SpanKind.CLIENT,
        {
            "http.request.method": "POST",
            "url.full": "http://payments:8080/pay",
            "http.response.status_code": 201,
        },
        1_500_000,
    )
    assert format_span(span) == (
        "2024-01-02T03:04:05.678Z checkout CLIENT POST http://payments:8080/pay 201 1.50ms "
        "trace=0af7651916cd43dd8448eb211c80319c"
    )


def test_console_line_without_status_or_service() -> None:
    span = finished_span("HTTP /x", SpanKind.SERVER, {"url.path": "/x"}, 0, resource={})
    assert format_span(span) == (
        "2024-01-02T03:04:05.678Z ? SERVER HTTP /x /x - 0.00ms "
        "trace=0af7651916cd43dd8448eb211c80319c"
    )


def test_console_exporter_writes_one_line_per_span() -> None:
    span = finished_span(
        "GET /", SpanKind.SERVER, {"http.request.method": "GET", "url.path": "/"}, 0
    )
    out = io.StringIO()
    ConsoleLineExporter(out).export([span, span])
    line = format_span(span) + "\n"
    assert out.getvalue() == line + line


# ---------------------------------------------------------------- resolved exporters, for real


@pytest.mark.parametrize(
    "case",
    ["generic-http", "generic-grpc", "signal-http", "override-http", "override-grpc"],
)
def test_resolved_destinations_reach_a_receiver(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with OtlpReceiver() as rx:
        override, protocol = None, None
        if case == "generic-http":
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.http_endpoint)
        elif case == "generic-grpc":
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.grpc_endpoint)
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        elif case == "signal-http":
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rx.http_traces_url)
        elif case == "override-http":
            override = rx.http_endpoint
        else:
            override, protocol = rx.grpc_endpoint, GRPC
        destination = resolve("traces", override, protocol)
        exporter = destinations.span_exporter(destination)
        span = finished_span("GET /", SpanKind.SERVER, {"url.path": "/"}, 1000)
        assert exporter.export([span]).name == "SUCCESS"
        exporter.shutdown()
        transport = "grpc" if case.endswith("grpc") else "http"
        assert rx.requests[f"{transport}-traces"] == 1
        assert [(s.name, s.resource) for s in rx.spans()] == [
            ("GET /", {"service.name": "checkout"})
        ]


# ---------------------------------------------------------------- TLS: the scheme, else INSECURE


def exported_metrics() -> MetricsData:
    """One real counter point, as the SDK's metric reader collects it."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=Resource({"service.name": "checkout"}), metric_readers=[reader]
    )
    provider.get_meter("otelbpf").create_counter("otelbpf.spans").add(3)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


@pytest.mark.parametrize(
    ("case", "insecure_variable"),
    [
        ("env-traces", "OTEL_EXPORTER_OTLP_INSECURE"),
        ("env-traces", "OTEL_EXPORTER_OTLP_TRACES_INSECURE"),
        ("override-traces", "OTEL_EXPORTER_OTLP_INSECURE"),
        ("override-metrics", "OTEL_EXPORTER_OTLP_METRICS_INSECURE"),
    ],
)
def test_grpc_host_and_port_honour_the_insecure_variables(
    case: str, insecure_variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint with no scheme says nothing about TLS: OTEL_EXPORTER_OTLP_*INSECURE does.
    A plaintext receiver takes the export only if the exporter did not start a TLS handshake."""
    with OtlpReceiver() as rx:
        target = f"127.0.0.1:{rx.grpc_port}"
        monkeypatch.setenv(insecure_variable, "true")
        signal = case.rpartition("-")[2]
        if case.startswith("env"):
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", target)
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
            destination = resolve(signal, None, None)
        else:
            destination = resolve(signal, target, GRPC)  # --endpoint HOST:PORT --protocol grpc
        assert destination == Destination(GRPC, target)
        if signal == "traces":
            exporter = destinations.span_exporter(destination)
            span = finished_span("GET /", SpanKind.SERVER, {"url.path": "/"}, 1000)
            result = exporter.export([span]).name
        else:
            exporter = destinations.metric_exporter(destination)
            result = exporter.export(exported_metrics()).name
        exporter.shutdown()
        assert exporter._insecure is True
        assert result == "SUCCESS"
        if signal == "traces":
            assert [(s.name, s.resource) for s in rx.spans()] == [
                ("GET /", {"service.name": "checkout"})
            ]
        else:
            assert [(p.name, p.value) for p in rx.metrics()] == [("otelbpf.spans", 3)]


@pytest.mark.parametrize(
    ("endpoint", "insecure_env", "expected"),
    [
        ("http://c:4317", None, True),
        ("HTTP://c:4317", None, True),  # a scheme is case-insensitive
        ("http://c:4317", "false", True),  # the scheme says it: no TLS
        ("https://c:4317", "true", False),
        ("HTTPS://c:4317", None, False),
        ("c:4317", "true", True),  # no scheme: the variable decides
        ("c:4317", "false", False),
        ("c:4317", None, False),  # nor a variable: the SDK's default, TLS
    ],
)
def test_grpc_tls_follows_the_scheme_else_the_variable(
    endpoint: str, insecure_env: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if insecure_env is not None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", insecure_env)
    spans = destinations.span_exporter(Destination(GRPC, endpoint))
    metrics = destinations.metric_exporter(Destination(GRPC, endpoint))
    assert (spans._insecure, metrics._insecure) == (expected, expected)
    spans.shutdown()
    metrics.shutdown()


def test_host_and_port_on_4317_are_grpc() -> None:
    assert resolve("traces", "collector:4317", None) == Destination(GRPC, "collector:4317")
    assert resolve("metrics", "10.0.0.5:4317", None) == Destination(GRPC, "10.0.0.5:4317")


# ---------------------------------------------------------------- the export timeout, in ms


def exporter_timeouts() -> tuple[float, float, float, float]:
    """The request timeout, in seconds, of each of the four exporters the agent can build."""
    grpc_spans = destinations.span_exporter(Destination(GRPC, "http://127.0.0.1:9"))
    grpc_metrics = destinations.metric_exporter(Destination(GRPC, "http://127.0.0.1:9"))
    http_spans = destinations.span_exporter(Destination(HTTP_PROTOBUF, "http://127.0.0.1:9/t"))
    http_metrics = destinations.metric_exporter(Destination(HTTP_PROTOBUF, "http://127.0.0.1:9/m"))
    grpc_spans.shutdown()
    grpc_metrics.shutdown()
    return (
        grpc_spans._timeout,
        http_spans._client._timeout,
        grpc_metrics._timeout,
        http_metrics._client._timeout,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (10.0, 10.0, 10.0, 10.0)),  # the specification's 10000 ms
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "2000"}, (2.0, 2.0, 2.0, 2.0)),
        (
            {
                "OTEL_EXPORTER_OTLP_TIMEOUT": "2000",
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "250",
                "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "1500",
            },
            (0.25, 0.25, 1.5, 1.5),
        ),
        (
            {"OTEL_EXPORTER_OTLP_TIMEOUT": "750", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": ""},
            (0.75, 0.75, 0.75, 0.75),  # empty is unset
        ),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": ""}, (10.0, 10.0, 10.0, 10.0)),
    ],
)
def test_the_timeout_variables_are_milliseconds(
    env: dict[str, str], expected: tuple[float, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert exporter_timeouts() == expected


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"}, (10.0, 10.0, 10.0, 10.0)),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "nan"}, (10.0, 10.0, 10.0, 10.0)),
        ({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0"}, (10.0, 10.0, 10.0, 10.0)),
        # a bad signal variable gives way to the common one
        (
            {"OTEL_EXPORTER_OTLP_TIMEOUT": "500", "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "-5"},
            (0.5, 0.5, 0.5, 0.5),
        ),
        ({"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "abc"}, (10.0, 10.0, 10.0, 10.0)),
    ],
)
def test_a_timeout_that_is_not_a_positive_number_is_warned_about_and_ignored(
    variables: dict[str, str],
    expected: tuple[float, float, float, float],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The specification: an invalid value SHOULD be warned about and ignored, as the BSP
    variables are; the agent used to refuse to start. A non-numeric METRICS_TIMEOUT also made
    the SDK's gRPC metric exporter raise as it was built."""
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    with caplog.at_level(logging.WARNING, logger="otelbpf.export.destinations"):
        assert exporter_timeouts() == expected
    bad = [v for v, text in variables.items() if text in ("10s", "nan", "0", "-5", "abc")]
    for variable in bad:
        assert f"{variable}={variables[variable]!r} is not a positive number" in caplog.text


@pytest.mark.parametrize("protocol", [GRPC, HTTP_PROTOBUF])
def test_a_hung_collector_costs_the_timeout_in_milliseconds(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector that accepts the connection and never answers: with a timeout of 300 ms,
    the export gives up after about that, not after 300 seconds."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{hung.getsockname()[1]}"
        )
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
        exporter = destinations.span_exporter(resolve("traces", None, None))
        span = finished_span("GET /", SpanKind.SERVER, {"url.path": "/"}, 1000)
        results: list[str] = []
        started = time.monotonic()
        export = threading.Thread(target=lambda: results.append(exporter.export([span]).name))
        export.daemon = True
        export.start()
        export.join(10)
        elapsed = time.monotonic() - started
        assert results == ["FAILURE"]
        assert elapsed < 3
        exporter.shutdown()


# ---------------------------------------------------------------- credentials stay out of logs


@pytest.mark.parametrize(
    ("endpoint", "logged"),
    [
        ("https://tenant:secret@otlp.example.com/v1/traces", "https://otlp.example.com/v1/traces"),
        ("http://token@collector:4318", "http://collector:4318"),
        ("https://a:p@ss@host:443/x", "https://host:443/x"),  # a raw @ in the password
        ("tenant:secret@collector:4317", "collector:4317"),  # no scheme
        ("http://collector:4318/v1/traces?who=a@b", "http://collector:4318/v1/traces?who=a@b"),
        ("collector:4317", "collector:4317"),
    ],
)
def test_endpoint_without_userinfo(endpoint: str, logged: str) -> None:
    assert destinations.without_userinfo(endpoint) == logged


def test_describe_leaves_out_the_credentials_the_exporter_keeps() -> None:
    endpoint = "https://tenant:secret@otlp.example.com/v1/traces"
    destination = Destination(HTTP_PROTOBUF, endpoint)
    assert (
        destinations.describe(destination, "traces")
        == "traces: OTLP http/protobuf to https://otlp.example.com/v1/traces"
    )
    assert (
        destinations.describe(Destination(GRPC, "tenant:secret@collector:4317"), "metrics")
        == "metrics: OTLP grpc to collector:4317"
    )
    assert destinations.span_exporter(destination)._endpoint == endpoint


# ---------------------------------------------------------------- OTEL_SDK_DISABLED


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_sdk_disabled_resolves_nowhere_and_says_so(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert resolve("traces", None, None) is None
    assert resolve("metrics", "http://collector:4318", HTTP_PROTOBUF) is None
    # the agent logs both in one line at start-up
    assert destinations.describe(None, "traces") == (
        "traces: not exported (OTEL_SDK_DISABLED=true; requests are still traced and counted)"
    )
    assert destinations.describe(None, "metrics") == (
        "metrics: not exported (OTEL_SDK_DISABLED=true)"
    )


def test_sdk_disabled_false_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "false")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert resolve("traces", None, None) == Destination(GRPC, None)
    assert destinations.describe(None, "traces") == "traces: console"
