"""Span records become finished spans: ids, the parent a request named, the sampler's say.

The shortcut for the always-on samplers must answer as the SDK's sampler does: every case is
run through the factory twice, once with the shortcut and once asking the sampler itself.
"""

from __future__ import annotations

import os

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind

from otelbpf.export.finished_spans import FinishedSpan, SpanFactory
from otelbpf.export.http_spans import SpanRecord

RESOURCE = Resource({"service.name": "checkout"})
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
SAMPLED_TP = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"
UNSAMPLED_TP = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-00"
LOW_TRACE_ID = 0x00000000000000000000000000000001  # kept by a ratio sampler
HIGH_TRACE_ID = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF  # dropped by any ratio below 1


class FixedIds(IdGenerator):
    def __init__(self, trace_id: int) -> None:
        self.trace_id = trace_id

    def generate_span_id(self) -> int:
        return 0x1234

    def generate_trace_id(self) -> int:
        return self.trace_id


def record(
    kind: SpanKind = SpanKind.SERVER,
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> SpanRecord:
    return SpanRecord(
        name="GET /cart",
        kind=kind,
        start_ns=1,
        end_ns=2,
        attributes={"http.request.method": "GET"},
        is_error=False,
        traceparent=traceparent,
        metric_attributes={},
        tracestate=tracestate,
    )


def factory(sampler: Sampler, trace_id: int, shortcut: bool) -> SpanFactory:
    made = SpanFactory(sampler)
    made._ids = FixedIds(trace_id)
    made._always_on = made._always_on and shortcut
    return made


SAMPLERS = {
    "always_on": ALWAYS_ON,
    "parentbased_always_on": DEFAULT_ON,
    "always_off": ALWAYS_OFF,
    "parentbased_always_off": DEFAULT_OFF,
    "traceidratio": TraceIdRatioBased(0.5),
    "parentbased_traceidratio": ParentBased(TraceIdRatioBased(0.5)),
}
CASES = {
    "root": record(),
    "sampled parent": record(traceparent=SAMPLED_TP),
    "sampled parent with its tracestate": record(traceparent=SAMPLED_TP, tracestate="v=1,w=2"),
    "unsampled parent": record(traceparent=UNSAMPLED_TP),
    "malformed traceparent": record(traceparent="00-zz-yy-01"),
    "client sent a traceparent": record(SpanKind.CLIENT, SAMPLED_TP),
}


@pytest.mark.parametrize("sampler_name", SAMPLERS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("trace_id", [LOW_TRACE_ID, HIGH_TRACE_ID])
def test_the_shortcut_answers_as_the_sampler(sampler_name: str, case: str, trace_id: int) -> None:
    sampler = SAMPLERS[sampler_name]
    fast = factory(sampler, trace_id, shortcut=True).build(CASES[case], RESOURCE)
    asked = factory(sampler, trace_id, shortcut=False).build(CASES[case], RESOURCE)
    assert fast == asked


def test_only_the_always_on_samplers_take_the_shortcut() -> None:
    taken = {name for name, sampler in SAMPLERS.items() if SpanFactory(sampler)._always_on}
    assert taken == {"always_on", "parentbased_always_on"}


def test_a_server_span_continues_the_trace_its_request_carried() -> None:
    span = factory(DEFAULT_ON, LOW_TRACE_ID, shortcut=True).build(
        record(traceparent=SAMPLED_TP), RESOURCE
    )
    assert span == FinishedSpan(
        record=record(traceparent=SAMPLED_TP),
        resource=RESOURCE,
        trace_id=TRACE_ID,
        span_id=0x1234,
        parent_span_id=PARENT_ID,
        trace_state=None,
    )


def test_the_parent_tracestate_stays_with_the_continued_trace() -> None:
    carried = record(traceparent=SAMPLED_TP, tracestate="vendor=a,other=b")
    for sampler in (DEFAULT_ON, ALWAYS_ON, ParentBased(TraceIdRatioBased(0.5))):
        for shortcut in (True, False):
            span = factory(sampler, LOW_TRACE_ID, shortcut).build(carried, RESOURCE)
            assert span is not None and span.trace_state == "vendor=a,other=b"
            assert span.parent_span_id == PARENT_ID


def test_a_root_span_gets_a_new_trace_and_no_parent() -> None:
    span = factory(DEFAULT_ON, LOW_TRACE_ID, shortcut=True).build(record(), RESOURCE)
    assert span is not None
    assert (span.trace_id, span.span_id, span.parent_span_id) == (LOW_TRACE_ID, 0x1234, None)


def test_an_unsampled_parent_drops_the_span_under_the_default_sampler() -> None:
    assert SpanFactory(DEFAULT_ON).build(record(traceparent=UNSAMPLED_TP), RESOURCE) is None


@pytest.mark.parametrize(
    ("variable", "argument", "expected"),
    [
        (None, None, "ParentBased{root:AlwaysOnSampler"),
        ("always_off", None, "AlwaysOffSampler"),
        ("traceidratio", "0.25", "TraceIdRatioBased{0.25}"),
    ],
)
def test_the_sampler_comes_from_otel_traces_sampler(
    monkeypatch: pytest.MonkeyPatch, variable: str | None, argument: str | None, expected: str
) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    if variable:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", variable)
    if argument:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    assert TracerProvider(shutdown_on_exit=False).sampler.get_description().startswith(expected)
    assert SpanFactory().sampler.get_description().startswith(expected)


def test_a_ratio_sampler_keeps_its_share_of_random_traces() -> None:
    made = SpanFactory(TraceIdRatioBased(0.25))
    kept = sum(made.build(record(), RESOURCE) is not None for _ in range(4000))
    assert 800 <= kept <= 1200  # 1000 expected; the bounds are 7 standard deviations out
