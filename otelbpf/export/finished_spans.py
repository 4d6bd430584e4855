"""Tracing stage: a span record becomes a finished, sampled span with its ids.

Every exchange is already over when the agent sees it, so the SDK's span life cycle (a
Tracer, start/end, context, locks, a ReadableSpan and its SpanContext per span) buys
nothing here: a FinishedSpan is the record, its process's Resource and the ids, and the
export stage encodes it straight to OTLP (otlp_encoding.py).

The sampler is still the SDK's, configured by OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG.
For the two always-on samplers (the SDK's default among them) the decision is known without
calling it: always_on samples every span, parentbased_always_on every span but those under a
remote parent that was not sampled; both keep the parent's tracestate. That shortcut
answers exactly as the SDK does (tests/unit/test_finished_spans.py compares them); every
other sampler is asked per span. A sampled-out exchange still counts in the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otelbpf import __version__
from otelbpf.export.http_spans import SpanRecord
from otelbpf.frozen import fast_constructor

# samplers whose answer is known: True, "yes"; False, "yes unless a remote parent said no"
_ALWAYS_ON = {ALWAYS_ON.get_description(): True, DEFAULT_ON.get_description(): False}
INSTRUMENTATION_SCOPE = "otelbpf"
SCOPE = InstrumentationScope(INSTRUMENTATION_SCOPE, __version__)  # of every span and metric
_propagator = TraceContextTextMapPropagator()
_EMPTY_CONTEXT = Context()  # a root span's parent context: no lookup of the current one


@dataclass(frozen=True, slots=True)
class FinishedSpan:
    """A sampled span, ready to export."""

    record: SpanRecord
    resource: Resource
    trace_id: int
    span_id: int
    parent_span_id: int | None  # the remote parent a SERVER request's traceparent named
    trace_state: str | None  # the W3C tracestate header value, when there is one


_finished_span = fast_constructor(FinishedSpan)


def _trace_state_header(context: SpanContext | None) -> str | None:
    state = context.trace_state if context is not None else None
    return state.to_header() if state else None


class SpanFactory:
    """SpanRecord + Resource -> FinishedSpan, or None when the sampler drops it."""

    def __init__(self, sampler: Sampler | None = None) -> None:
        self.sampler = sampler or TracerProvider(shutdown_on_exit=False).sampler
        description = self.sampler.get_description()
        self._always_on = description in _ALWAYS_ON
        self._ignores_parent = _ALWAYS_ON.get(description, False)
        self._ids = RandomIdGenerator()

    def build(self, record: SpanRecord, resource: Resource) -> FinishedSpan | None:
        parent = None
        if record.traceparent and record.kind is SpanKind.SERVER:
            # a CLIENT span's traceparent is the one it sent: it names that span, not a parent
            carrier = {"traceparent": record.traceparent}
            if record.tracestate:
                carrier["tracestate"] = record.tracestate
            remote = get_current_span(_propagator.extract(carrier))
            found = remote.get_span_context()
            if found.is_valid:
                parent = found
        trace_id = parent.trace_id if parent is not None else self._ids.generate_trace_id()
        if self._always_on:
            if parent is not None and not (parent.trace_flags.sampled or self._ignores_parent):
                return None
            trace_state = _trace_state_header(parent)
        else:
            decision = self.sampler.should_sample(
                set_span_in_context(NonRecordingSpan(parent)) if parent else _EMPTY_CONTEXT,
                trace_id,
                record.name,
                record.kind,
                record.attributes,
            )
            if not decision.decision.is_sampled():
                return None
            trace_state = decision.trace_state.to_header() if decision.trace_state else None
        return _finished_span(
            record,
            resource,
            trace_id,
            self._ids.generate_span_id(),
            parent.span_id if parent is not None else None,
            trace_state or None,
        )
