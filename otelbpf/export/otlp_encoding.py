"""Export stage: finished spans to an OTLP ExportTraceServiceRequest, fast.

The SDK's encode_spans builds a fresh KeyValue and AnyValue message for every attribute of
every span; for the agent's spans (13 attributes or so) that was 40 us a span, the largest
single cost per request (bench/results/profile.md). The agent's spans repeat: method,
status, route, server address and port, protocol version, a keep-alive peer. So each
distinct (key, value) is built once and copied into later spans, and everything of a span
but its ids and times (name, kind, status, flags and the whole attribute set) seen again,
as on every request of a keep-alive connection, is merged in as one serialised template
by protobuf's own parser: 2.0 against 3.7 us a span for the ids-and-block encoding before
it (measured on this machine).
The output is the message the SDK's encoder makes of the same span (pinned by
tests/unit/test_otlp_encoding.py); array values go through the SDK's own encoder.

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
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcOtlpSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpOtlpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope as PbScope
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, SpanFlags
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from otelbpf.errors import SetupError
from otelbpf.export.finished_spans import SCOPE, FinishedSpan

log = logging.getLogger(__name__)

# bounded: a value seen once (an ephemeral client port) must not grow the agent
MAX_CACHED_ATTRIBUTES = 16384
MAX_CACHED_RESOURCES = 1024
MAX_CACHED_TEMPLATES = 2048  # a few hundred bytes each, with their key
_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
# the SDK sets the has-is-remote bit on every span, and is-remote when the parent is remote
# (the only parent an agent's span has is the remote one its request's traceparent named)
_ROOT_FLAGS = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_CHILD_FLAGS = _ROOT_FLAGS | SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_SCALARS = frozenset((str, bool, int, float))
_ERROR = PbStatus(code=StatusCode.ERROR.value)
_UNSET = PbStatus(code=StatusCode.UNSET.value)


class SpanEncoder:
    """FinishedSpans -> ExportTraceServiceRequest, equal to the SDK's encode_spans."""

    def __init__(self) -> None:
        # (key, value, type): True == 1 as dict keys, but not as attribute values
        self._attributes: dict[tuple[str, Any, type], KeyValue] = {}
        # by identity: Resource.__hash__ serialises its attributes to JSON on every call (6 us);
        # the resource is kept with its message so its id cannot be reused while cached
        self._resources: dict[int, tuple[Resource, PbResource]] = {}
        # a span's constant part seen twice is kept serialised; protobuf's parser merges it
        # into the next span like it: one C call instead of a dozen message copies
        self._templates: dict[tuple, bytes | None] = {}
        self._scope: PbScope = _encode_instrumentation_scope(SCOPE)

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

    def encode(self, spans: Sequence[FinishedSpan]) -> ExportTraceServiceRequest:
        # grouped as the SDK groups them: by resource in order of first appearance, one scope
        # (equal resources of distinct objects get one group each: the agent has one per process)
        groups: dict[int, ScopeSpans] = {}
        request = ExportTraceServiceRequest()
        add_span = self._add_span
        for span in spans:
            resource = span.resource
            scope_spans = groups.get(id(resource))
            if scope_spans is None:
                resource_spans: ResourceSpans = request.resource_spans.add(
                    schema_url=resource.schema_url
                )
                resource_spans.resource.CopyFrom(self._resource(resource))
                scope_spans = resource_spans.scope_spans.add(schema_url=SCOPE.schema_url)
                scope_spans.scope.CopyFrom(self._scope)
                groups[id(resource)] = scope_spans
            add_span(scope_spans, span)
        return request

    def _add_span(self, scope_spans: ScopeSpans, span: FinishedSpan) -> None:
        record = span.record
        parent_span_id = span.parent_span_id
        attributes = record.attributes
        encoded = scope_spans.spans.add(
            trace_id=span.trace_id.to_bytes(16, "big"),
            span_id=span.span_id.to_bytes(8, "big"),
            trace_state=span.trace_state,
            parent_span_id=None if parent_span_id is None else parent_span_id.to_bytes(8, "big"),
            start_time_unix_nano=record.start_ns,
            end_time_unix_nano=record.end_ns,
        )
        try:  # with the types: True == 1, but not as attribute values
            template_key = (
                record.name,
                record.kind,
                record.is_error,
                parent_span_id is None,
                tuple(attributes.items()),
                tuple(map(type, attributes.values())),
            )
            template = self._templates.get(template_key)
        except TypeError:  # an unhashable value (a list): no template
            template_key, template = None, None
        if template is not None:
            encoded.MergeFromString(template)
            return
        constant = PbSpan(
            name=record.name,
            kind=_KIND[record.kind],
            status=_ERROR if record.is_error else _UNSET,
            flags=_ROOT_FLAGS if parent_span_id is None else _CHILD_FLAGS,
        )
        key_value = self._key_value
        constant.attributes.extend(
            key_value(key, value)
            if type(value) in _SCALARS
            else _encode_attributes({key: value})[0]  # arrays: rare, the SDK's encoder
            for key, value in attributes.items()
        )
        serialized = constant.SerializeToString()
        encoded.MergeFromString(serialized)
        if template_key is None:
            return
        if len(self._templates) >= MAX_CACHED_TEMPLATES:
            self._templates.clear()
        # the first sighting only marks the set: a set never seen again is not kept
        self._templates[template_key] = serialized if template_key in self._templates else None


class GrpcSpanExporter(GrpcOtlpSpanExporter):
    """The SDK's OTLP/gRPC span exporter, encoding with SpanEncoder."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoder = SpanEncoder()

    def _translate_data(self, data: Sequence[FinishedSpan]) -> ExportTraceServiceRequest:  # type: ignore[override]
        return self._encoder.encode(data)


class HttpSpanExporter(HttpOtlpSpanExporter):
    """The SDK's OTLP/HTTP span exporter, encoding with SpanEncoder.

    Its export() encodes inline, so this one encodes and sends through the exporter's own
    HTTP client: retries, headers, TLS and compression stay the SDK's.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not callable(getattr(getattr(self, "_client", None), "export", None)):
            raise SetupError(
                "the installed opentelemetry-exporter-otlp-proto-http has no HTTP client "
                "to hand encoded spans to",
                "install the version pyproject.toml names (./setup.sh does)",
            )
        self._encoder = SpanEncoder()

    def export(self, spans: Sequence[FinishedSpan]) -> SpanExportResult:  # type: ignore[override]
        if self._shutdown:
            log.warning("span exporter already shut down: a batch is dropped")
            return SpanExportResult.FAILURE
        try:
            serialized = self._encoder.encode(spans).SerializePartialToString()
        except Exception as error:  # one bad batch costs that batch
            log.error("failed to encode a span batch: %s", error)
            return SpanExportResult.FAILURE
        result = self._client.export(serialized)
        if getattr(result, "success", False):
            return SpanExportResult.SUCCESS
        log.warning("OTLP/HTTP span export failed: %s", getattr(result, "error", result))
        return SpanExportResult.FAILURE
