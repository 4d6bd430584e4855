"""The fast span encoder produces exactly the SDK's ExportTraceServiceRequest.

Equality is checked on the decoded message and on the serialised bytes, over spans that
exercise every field the agent sets, and the rare ones it hands to the SDK's own encoder.
"""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from otelbpf.export import otlp_encoding
from otelbpf.export.otlp_encoding import HttpSpanExporter, SpanEncoder
from tests.otlp_receiver import OtlpReceiver

CHECKOUT = Resource({"service.name": "checkout", "process.pid": 101})
PAYMENTS = Resource({"service.name": "payments", "process.pid": 202, "host.arch": "amd64"})
SCOPE = InstrumentationScope("otelbpf", "0.1.0")
OTHER_SCOPE = InstrumentationScope("other", "2", "https://opentelemetry.io/schemas/1.21.0")


def context(trace_id: int, span_id: int, remote: bool = False, state: str = "") -> SpanContext:
    return SpanContext(
        trace_id,
        span_id,
        is_remote=remote,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState.from_header([state]) if state else TraceState(),
    )


def span(
    n: int,
    resource: Resource = CHECKOUT,
    scope: InstrumentationScope | None = SCOPE,
    **overrides: object,
) -> ReadableSpan:
    fields: dict[str, object] = {
        "name": f"GET /items/{n % 3}",
        "context": context(0x4BF92F3577B34DA6A3CE929D0E0E4736 + n, 0x00F067AA0BA902B7 + n),
        "resource": resource,
        "attributes": {
            "http.request.method": "GET",
            "http.response.status_code": 200 + (n % 2),
            "client.port": 40000 + n,
            "network.protocol.version": "1.1",
            "url.path": f"/items/{n % 3}",
        },
        "kind": SpanKind.SERVER,
        "instrumentation_scope": scope,
        "status": Status(StatusCode.UNSET),
        "start_time": 1_700_000_000_000_000_000 + n,
        "end_time": 1_700_000_000_020_000_000 + n,
    }
    fields.update(overrides)
    return ReadableSpan(**fields)  # type: ignore[arg-type]


def assert_same_as_sdk(spans: list[ReadableSpan], encoder: SpanEncoder | None = None) -> None:
    ours = (encoder or SpanEncoder()).encode(spans)
    sdk = encode_spans(spans)
    assert ours == sdk
    assert ours.SerializeToString(deterministic=True) == sdk.SerializeToString(deterministic=True)


def test_plain_server_spans_of_one_process() -> None:
    assert_same_as_sdk([span(n) for n in range(10)])


def test_many_resources_and_scopes_grouped_in_order_of_appearance() -> None:
    spans = [
        span(0),
        span(1, PAYMENTS),
        span(2, scope=OTHER_SCOPE),
        span(3, PAYMENTS, scope=None),
        span(4),
        span(5, PAYMENTS),
    ]
    assert_same_as_sdk(spans)


def test_parents_trace_state_kinds_and_status() -> None:
    spans = [
        span(0, parent=context(1, 2, remote=True)),  # a continued remote trace
        span(1, parent=context(1, 3, remote=False)),
        span(2, context=context(7, 8, state="vendor=a,other=b")),
        span(3, kind=SpanKind.CLIENT, status=Status(StatusCode.ERROR)),
        span(4, status=Status(StatusCode.ERROR, "upstream reset")),
        span(5, kind=SpanKind.INTERNAL, status=Status(StatusCode.OK)),
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


def test_repeated_attribute_sets_come_from_blocks_and_stay_equal() -> None:
    """A keep-alive connection repeats its whole attribute set: from the second span on, the
    set is one serialised block; types stay apart there too, and lists never make blocks."""
    sets = [
        {"a": 1, "b": "x"},
        {"a": True, "b": "x"},  # equal to the first as a dict key: a block of its own
        {"a": 1.0, "b": "x"},
        {"list": ["x", "y"], "a": 1},  # unhashable: encoded value by value every time
        {"tuple": ("x", "y"), "a": 1},
    ]
    encoder = SpanEncoder()
    for _ in range(2):  # the second batch finds every block made
        assert_same_as_sdk(
            [span(n, attributes=dict(sets[n % len(sets)])) for n in range(30)], encoder
        )
    assert len(encoder._blocks) == 4
    assert all(block is not None for block in encoder._blocks.values())


def test_events_and_links_go_through_the_sdk_encoder() -> None:
    spans = [
        span(0, events=(Event("retry", {"attempt": 2}, 1_700_000_000_010_000_000),)),
        span(1, links=(Link(context(9, 10), {"why": "batch"}),)),
        span(2),
    ]
    assert_same_as_sdk(spans)


def test_a_full_cache_starts_over_and_stays_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp_encoding, "MAX_CACHED_ATTRIBUTES", 8)
    monkeypatch.setattr(otlp_encoding, "MAX_CACHED_RESOURCES", 1)
    monkeypatch.setattr(otlp_encoding, "MAX_CACHED_BLOCKS", 2)
    encoder = SpanEncoder()
    repeated = {"attributes": {"http.request.method": "GET", "server.port": 8080}}
    for _ in range(3):  # reused across batches, as the exporter reuses it
        assert_same_as_sdk([span(n, CHECKOUT if n % 2 else PAYMENTS) for n in range(20)], encoder)
        assert_same_as_sdk([span(n, **repeated) for n in range(5)], encoder)
    assert len(encoder._attributes) <= 8
    assert len(encoder._resources) <= 1
    assert len(encoder._blocks) <= 2


def test_http_exporter_sends_the_fast_encoding_to_a_receiver() -> None:
    with OtlpReceiver() as receiver:
        exporter = HttpSpanExporter(endpoint=receiver.http_traces_url, timeout=5)
        assert exporter.export([span(n) for n in range(5)]).name == "SUCCESS"
        exporter.shutdown()
        received = receiver.wait_for_spans(5, timeout=10)
    assert sorted(s.attributes["client.port"] for s in received) == [40000 + n for n in range(5)]
    assert {s.name for s in received} == {"GET /items/0", "GET /items/1", "GET /items/2"}
