"""The fast span encoder produces exactly the SDK's ExportTraceServiceRequest.

Each FinishedSpan is also made into the SDK's ReadableSpan, as the SDK's own tracer would
have ended it; the SDK's encode_spans of those is the reference. Equality is checked on the
decoded message and on the serialised bytes, over spans that exercise every field the agent
sets.
"""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import (
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from otelbpf.export import otlp_encoding
from otelbpf.export.finished_spans import SCOPE, FinishedSpan
from otelbpf.export.http_spans import SpanRecord
from otelbpf.export.otlp_encoding import GrpcSpanExporter, HttpSpanExporter, SpanEncoder
from tests.otlp_receiver import OtlpReceiver

CHECKOUT = Resource({"service.name": "checkout", "process.pid": 101})
PAYMENTS = Resource({"service.name": "payments", "process.pid": 202, "host.arch": "amd64"})
SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def span(
    n: int,
    resource: Resource = CHECKOUT,
    *,
    attributes: dict | None = None,
    kind: SpanKind = SpanKind.SERVER,
    is_error: bool = False,
    parent_span_id: int | None = None,
    trace_state: str | None = None,
) -> FinishedSpan:
    record = SpanRecord(
        name=f"GET /items/{n % 3}",
        kind=kind,
        start_ns=1_700_000_000_000_000_000 + n,
        end_ns=1_700_000_000_020_000_000 + n,
        attributes=attributes
        if attributes is not None
        else {
            "http.request.method": "GET",
            "http.response.status_code": 200 + (n % 2),
            "client.port": 40000 + n,
            "network.protocol.version": "1.1",
            "url.path": f"/items/{n % 3}",
        },
        is_error=is_error,
        traceparent=None,
        metric_attributes={},
    )
    return FinishedSpan(
        record=record,
        resource=resource,
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736 + n,
        span_id=0x00F067AA0BA902B7 + n,
        parent_span_id=parent_span_id,
        trace_state=trace_state,
    )


def as_sdk_span(span: FinishedSpan) -> ReadableSpan:
    """The ReadableSpan the SDK's tracer would have ended for this span."""
    record = span.record
    state = TraceState.from_header([span.trace_state]) if span.trace_state else TraceState()
    parent = (
        SpanContext(span.trace_id, span.parent_span_id, is_remote=True, trace_flags=SAMPLED)
        if span.parent_span_id is not None
        else None
    )
    return ReadableSpan(
        name=record.name,
        context=SpanContext(
            span.trace_id, span.span_id, is_remote=False, trace_flags=SAMPLED, trace_state=state
        ),
        parent=parent,
        resource=span.resource,
        attributes=record.attributes,
        kind=record.kind,
        instrumentation_scope=SCOPE,
        status=Status(StatusCode.ERROR if record.is_error else StatusCode.UNSET),
        start_time=record.start_ns,
        end_time=record.end_ns,
    )


def assert_same_as_sdk(spans: list[FinishedSpan], encoder: SpanEncoder | None = None) -> None:
    serialized = (encoder or SpanEncoder()).encode(spans)
    ours = ExportTraceServiceRequest.FromString(serialized)
    sdk = encode_spans([as_sdk_span(s) for s in spans])
    assert ours == sdk
    # nothing unknown to the schema rode along, and nothing was lost: the same fields, the
    # same bytes once protobuf writes both in field order
    assert ours.SerializeToString(deterministic=True) == sdk.SerializeToString(deterministic=True)
    assert len(serialized) == len(sdk.SerializeToString())


def test_plain_server_spans_of_one_process() -> None:
    assert_same_as_sdk([span(n) for n in range(10)])


def test_many_resources_grouped_in_order_of_appearance() -> None:
    spans = [span(0), span(1, PAYMENTS), span(2), span(3, PAYMENTS), span(4)]
    assert_same_as_sdk(spans)


def test_parents_trace_state_kinds_and_status() -> None:
    spans = [
        span(0, parent_span_id=2),  # a continued remote trace
        span(1, trace_state="vendor=a,other=b"),
        span(2, parent_span_id=3, trace_state="vendor=a"),
        span(3, kind=SpanKind.CLIENT, is_error=True),
        span(4, is_error=True),
        span(5, kind=SpanKind.INTERNAL),
        span(6, kind=SpanKind.PRODUCER),
        span(7, kind=SpanKind.CONSUMER),
    ]
    assert_same_as_sdk(spans)


def test_value_types_are_kept_apart() -> None:
    # True == 1 and hash(True) == hash(1): a cache keyed on the value alone would mix them
    spans = [
        span(0, attributes={"a": 1, "b": True, "c": 1.0, "d": "1"}),
        span(1, attributes={"a": True, "b": 1, "c": 1, "d": 1.0}),
        span(2, attributes={"list": ["x", "y"], "ints": (1, 2), "empty": "", "zero": 0}),
        span(3, attributes={}),
    ]
    assert_same_as_sdk(spans)


def test_repeated_spans_come_from_templates_and_stay_equal() -> None:
    """A keep-alive connection repeats everything but ids and times: from the second span on
    that part is one serialised template; types stay apart there too, a status, a kind or a
    parent of its own makes another template, and lists never make one."""
    sets = [
        {"a": 1, "b": "x"},
        {"a": True, "b": "x"},  # equal to the first as a dict key: a template of its own
        {"a": 1.0, "b": "x"},
        {"list": ["x", "y"], "a": 1},  # unhashable: encoded value by value every time
        {"tuple": ("x", "y"), "a": 1},
    ]
    encoder = SpanEncoder()
    for _ in range(2):  # the second batch finds every template made
        batch = [span(n, attributes=dict(sets[n % len(sets)])) for n in range(30)]
        batch += [span(1, attributes={"a": 1, "b": "x"}, is_error=True)] * 2
        batch += [span(1, attributes={"a": 1, "b": "x"}, kind=SpanKind.CLIENT)] * 2
        batch += [span(1, attributes={"a": 1, "b": "x"}, parent_span_id=9)] * 2
        assert_same_as_sdk(batch, encoder)
    assert len(encoder._templates) == 4 * 3 + 3
    assert all(template is not None for template in encoder._templates.values())


def test_one_attribute_dict_shared_by_many_spans() -> None:
    """HttpSpanMemo hands the same dict to every repeat; the encoder then finds its template
    by the dict's identity. That shortcut must still tell names, kinds, status and parents
    apart, since nothing stops one dict from riding on spans that differ in those."""
    shared = {"http.request.method": "GET", "server.port": 8080, "flag": True}
    encoder = SpanEncoder()
    for _ in range(3):
        batch = [span(n, attributes=shared) for n in range(9)]  # three names
        batch += [span(1, attributes=shared, is_error=True)] * 2
        batch += [span(1, attributes=shared, kind=SpanKind.CLIENT)] * 2
        batch += [span(1, attributes=shared, parent_span_id=9)] * 2
        batch += [span(1, attributes=shared, trace_state="vendor=a")] * 2
        # interleaved: each differs from the one before in one thing only
        batch += [span(1, attributes=shared), span(1, attributes=shared, is_error=True)] * 3
        batch += [span(1, attributes=shared), span(1, attributes=shared, kind=SpanKind.CLIENT)] * 3
        batch += [span(1, attributes=shared), span(1, attributes=shared, parent_span_id=5)] * 3
        assert_same_as_sdk(batch, encoder)
    assert encoder._shared_templates  # the shortcut was taken


def test_a_full_cache_starts_over_and_stays_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp_encoding, "MAX_CACHED_ATTRIBUTES", 8)
    monkeypatch.setattr(otlp_encoding, "MAX_CACHED_RESOURCES", 1)
    monkeypatch.setattr(otlp_encoding, "MAX_CACHED_TEMPLATES", 2)
    encoder = SpanEncoder()
    repeated = {"http.request.method": "GET", "server.port": 8080}
    for _ in range(3):  # reused across batches, as the exporter reuses it
        assert_same_as_sdk([span(n, CHECKOUT if n % 2 else PAYMENTS) for n in range(20)], encoder)
        assert_same_as_sdk([span(n, attributes=repeated) for n in range(5)], encoder)
    assert len(encoder._attributes) <= 8
    assert len(encoder._resources) <= 1
    assert len(encoder._templates) <= 2
    assert len(encoder._shared_templates) <= 2


def test_http_exporter_sends_the_fast_encoding_to_a_receiver() -> None:
    with OtlpReceiver() as receiver:
        exporter = HttpSpanExporter(endpoint=receiver.http_traces_url, timeout=5)
        assert exporter.export([span(n) for n in range(5)]).name == "SUCCESS"
        exporter.shutdown()
        received = receiver.wait_for_spans(5, timeout=10)
    assert sorted(s.attributes["client.port"] for s in received) == [40000 + n for n in range(5)]
    assert {s.name for s in received} == {"GET /items/0", "GET /items/1", "GET /items/2"}


def test_an_int_beyond_64_bits_goes_as_text_and_the_rest_still_goes() -> None:
    # protobuf refuses such an int, and with it the whole export request: the parsers keep
    # traced input below 64 bits, and the encoder keeps the batch if one gets through anyway
    spans = [span(0), span(1, attributes={"n": 2**64, "m": -(2**63) - 1, "ok": 7}), span(2)]
    request = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    encoded = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(encoded) == 3
    values = {kv.key: kv.value for kv in encoded[1].attributes}
    assert values["n"] == AnyValue(string_value=str(2**64))
    assert values["m"] == AnyValue(string_value=str(-(2**63) - 1))
    assert values["ok"] == AnyValue(int_value=7)


def test_no_spans_is_the_empty_request() -> None:
    assert SpanEncoder().encode([]) == encode_spans([]).SerializeToString() == b""


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**63 - 1])
def test_varints_are_protobufs(value: int) -> None:
    # AnyValue.int_value is a varint field (number 3): its tag byte, then the varint
    tag = bytes([AnyValue.DESCRIPTOR.fields_by_name["int_value"].number << 3])
    written = AnyValue(int_value=value).SerializeToString()
    assert tag + otlp_encoding._varint(value) == (written or tag + b"\0")
    # and a length as protobuf frames a string: Span.name (field 5) of that many bytes
    if value < 100_000:
        name_tag = otlp_encoding._length_delimited_tag(5)
        expected = name_tag + otlp_encoding._varint(value) + b"x" * value if value else b""
        assert PbSpan(name="x" * value).SerializeToString() == expected


def test_a_large_batch_of_many_processes_reads_back_equal() -> None:
    resources = [Resource({"service.name": f"s{n}", "process.pid": n}) for n in range(7)]
    assert_same_as_sdk([span(n, resources[n % 7]) for n in range(3000)])


def test_grpc_exporter_sends_serialised_spans_also_after_a_reconnect() -> None:
    with OtlpReceiver() as receiver:
        exporter = GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=5)
        assert exporter.export([span(n) for n in range(3)]).name == "SUCCESS"
        exporter._initialize_channel_and_stub()  # what the SDK does on UNAVAILABLE
        assert exporter.export([span(n) for n in range(3, 5)]).name == "SUCCESS"
        exporter.shutdown()
        received = receiver.wait_for_spans(5, timeout=10)
    assert sorted(s.attributes["client.port"] for s in received) == [40000 + n for n in range(5)]
