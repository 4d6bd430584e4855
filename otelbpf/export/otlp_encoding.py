"""Export stage: finished spans to an OTLP ExportTraceServiceRequest, fast.

The SDK's encode_spans builds a fresh KeyValue and AnyValue message for every attribute of
every span; for the agent's spans (13 attributes or so) that was 40 us a span, the largest
single cost per request (bench/results/profile.md). The agent's attributes repeat: method,
status, route, server address and port, protocol version, a keep-alive peer. So each
distinct (key, value) is built once and copied into later spans (13 us a span, measured on
this machine), and a whole attribute set seen again (every request of a keep-alive
connection) is merged in as one serialised block by protobuf's own parser (7 us a span).
The output is the same message the SDK's encoder produces (pinned by
tests/unit/test_otlp_encoding.py); anything unusual (events, links, array values) goes
through the SDK's own encoders.

The exporters below are the SDK's OTLP exporters with this encoder put in, so transport,
retries, headers, TLS and compression stay the SDK's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_attributes,
    _encode_instrumentation_scope,
    _encode_key_value,
    _encode_resource,
)
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import (
    _encode_span,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcOtlpSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpOtlpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, SpanFlags
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode

log = logging.getLogger(__name__)

# bounded: a value seen once (an ephemeral client port) must not grow the agent
MAX_CACHED_ATTRIBUTES = 16384
MAX_CACHED_RESOURCES = 1024
MAX_CACHED_BLOCKS = 2048  # whole attribute sets: a few hundred bytes each, with their key
_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_HAS_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_SCALARS = frozenset((str, bool, int, float))
_STATUS = {code: PbStatus(code=code.value) for code in StatusCode}


class SpanEncoder:
    """ReadableSpans -> ExportTraceServiceRequest, equal to the SDK's encode_spans."""

    def __init__(self) -> None:
        # (key, value, type): True == 1 as dict keys, but not as attribute values
        self._attributes: dict[tuple[str, Any, type], KeyValue] = {}
        # by identity: Resource.__hash__ serialises its attributes to JSON on every call (6 us);
        # the resource is kept with its message so its id cannot be reused while cached
        self._resources: dict[int, tuple[Resource, PbResource]] = {}
        # a whole attribute set seen twice (a keep-alive connection's requests) is kept as the
        # serialised attributes of a Span, which protobuf's parser merges into the next span
        # with that set: one C call (1.2 us) instead of 13 message copies (5 us) and lookups
        self._blocks: dict[tuple, bytes | None] = {}

    def _key_value(self, key: str, value: Any) -> KeyValue:
        cache_key = (key, value, type(value))
        found = self._attributes.get(cache_key)
        if found is None:
            if len(self._attributes) >= MAX_CACHED_ATTRIBUTES:
                self._attributes.clear()
            found = self._attributes[cache_key] = _encode_key_value(key, value)
        return found

    def _resource(self, resource: Resource) -> PbResource:
        found = self._resources.get(id(resource))
        if found is None:
            if len(self._resources) >= MAX_CACHED_RESOURCES:
                self._resources.clear()
            found = self._resources[id(resource)] = (resource, _encode_resource(resource))
        return found[1]

    def encode(self, spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        # grouped as the SDK groups them: resource, then scope, in order of first appearance
        # (equal resources of distinct objects get one group each: the agent has one per process)
        groups: dict[int, tuple[ResourceSpans, dict[InstrumentationScope | None, ScopeSpans]]]
        groups = {}
        request = ExportTraceServiceRequest()
        for span in spans:
            group = groups.get(id(span.resource))
            if group is None:
                resource_spans = request.resource_spans.add(schema_url=span.resource.schema_url)
                resource_spans.resource.CopyFrom(self._resource(span.resource))
                group = groups[id(span.resource)] = (resource_spans, {})
            resource_spans, scopes = group
            scope = span.instrumentation_scope or None
            scope_spans = scopes.get(scope)
            if scope_spans is None:
                scope_spans = resource_spans.scope_spans.add(
                    schema_url=scope.schema_url if scope else None
                )
                scope_spans.scope.CopyFrom(_encode_instrumentation_scope(scope))
                scopes[scope] = scope_spans
            self._add_span(scope_spans, span)
        return request

    def _add_span(self, scope_spans: ScopeSpans, span: ReadableSpan) -> None:
        if span.events or span.links or span.dropped_attributes:
            scope_spans.spans.append(_encode_span(span))  # rare here: the SDK's own path
            return
        context = span.context
        parent = span.parent
        flags = _HAS_IS_REMOTE
        if parent is not None and parent.is_remote:
            flags |= _IS_REMOTE
        status = span.status
        trace_state = context.trace_state
        state = ",".join(f"{k}={v}" for k, v in trace_state.items()) if trace_state else None
        encoded = scope_spans.spans.add(
            trace_id=context.trace_id.to_bytes(16, "big"),
            span_id=context.span_id.to_bytes(8, "big"),
            trace_state=state,
            parent_span_id=parent.span_id.to_bytes(8, "big") if parent else None,
            name=span.name,
            kind=_KIND[span.kind],
            start_time_unix_nano=span.start_time,
            end_time_unix_nano=span.end_time,
            status=_STATUS[status.status_code]
            if not status.description
            else PbStatus(code=status.status_code.value, message=status.description),
            flags=flags,
        )
        attributes = span.attributes
        if not attributes:
            return
        try:  # with the types: True == 1, but not as attribute values
            block_key = (tuple(attributes.items()), tuple(map(type, attributes.values())))
            block = self._blocks.get(block_key)
        except TypeError:  # an unhashable value (a list): no block
            block_key, block = None, None
        if block is not None:
            encoded.MergeFromString(block)
            return
        key_value = self._key_value
        key_values = [
            key_value(key, value)
            if type(value) in _SCALARS
            else _encode_attributes({key: value})[0]  # arrays: rare, the SDK's encoder
            for key, value in attributes.items()
        ]
        encoded.attributes.extend(key_values)
        if block_key is None:
            return
        if len(self._blocks) >= MAX_CACHED_BLOCKS:
            self._blocks.clear()
        # the first sighting only marks the set: a set never seen again costs no serialising
        self._blocks[block_key] = (
            PbSpan(attributes=key_values).SerializeToString() if block_key in self._blocks else None
        )


class GrpcSpanExporter(GrpcOtlpSpanExporter):
    """The SDK's OTLP/gRPC span exporter, encoding with SpanEncoder."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = SpanEncoder()

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        return self._encoder.encode(data)


class HttpSpanExporter(HttpOtlpSpanExporter):
    """The SDK's OTLP/HTTP span exporter, encoding with SpanEncoder.

    Its export() encodes inline, so the fast path sends through the exporter's HTTP client
    (retries and headers stay the SDK's); an SDK without that client gets the SDK's export.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = SpanEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        if self._shutdown or not callable(getattr(client, "export", None)):
            return super().export(spans)
        try:
            serialized = self._encoder.encode(spans).SerializePartialToString()
        except Exception as error:  # one bad batch costs that batch
            log.error("failed to encode a span batch: %s", error)
            return SpanExportResult.FAILURE
        result = client.export(serialized)
        if getattr(result, "success", False):
            return SpanExportResult.SUCCESS
        log.warning("OTLP/HTTP span export failed: %s", getattr(result, "error", result))
        return SpanExportResult.FAILURE
