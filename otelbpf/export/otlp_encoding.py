"""Export stage: finished spans to a serialised OTLP ExportTraceServiceRequest, fast.

The SDK's encode_spans builds a fresh KeyValue and AnyValue message for every attribute of
every span; for the agent's spans (13 attributes or so) that was 40 us a span, the largest
single cost per request (bench/results/profile.md). The agent's spans repeat: method,
status, route, server address and port, protocol version, a keep-alive peer. So:
- each distinct (key, value) is built once as a KeyValue message and copied into later spans;
- everything of a span but its ids and times (name, kind, status, flags and the whole
  attribute set) is serialised by protobuf once it is seen a second time, as on every
  request of a keep-alive connection, and kept: a span like it is its ids and times,
  serialised by protobuf, followed by those bytes. Protobuf's wire format merges two
  serialised messages written one after the other (the Span's fields are all scalars or
  repeated), so the result reads as one Span;
- the request around the spans is protobuf's length-delimited framing, written here: a
  field's tag, the length as a varint, the bytes. The Resource and scope inside it are
  serialised by protobuf, once per process.
2.0 us a span, against 4.3 us when every span was a message added to the request and merged
with its template (measured on this machine, to a real receiver). The request read back is
the message the SDK's encoder makes of the same spans (pinned by
tests/unit/test_otlp_encoding.py); array values go through the SDK's own encoder.

The exporters below are the SDK's OTLP exporters with this encoder put in, so transport,
retries, headers, TLS and compression stay the SDK's. The gRPC one sends the bytes through
the TraceService method as a stub whose serialiser is the identity.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
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
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
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


def _field_number(message: Any, name: str) -> int:
    return message.DESCRIPTOR.fields_by_name[name].number


def _length_delimited_tag(number: int) -> bytes:
    return _varint(number << 3 | 2)  # wire type 2: a length, then that many bytes


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint: 7 bits a byte, low first, the high bit set on all but
    the last."""
    if value < 0x80:  # the common lengths: a span (2 bytes), then 1 byte, without a loop
        return bytes((value,))
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _root_ids_and_times_layout() -> struct.Struct:
    """A root span's trace_id (16 bytes), span_id (8) and its two fixed64 times, as one
    struct: the bytes protobuf writes for them (tests/unit/test_otlp_encoding.py checks),
    in a third of the time of a message built and serialised per span."""
    fields = PbSpan.DESCRIPTOR.fields_by_name
    for name, wire_type in (
        ("trace_id", FieldDescriptor.TYPE_BYTES),
        ("span_id", FieldDescriptor.TYPE_BYTES),
        ("start_time_unix_nano", FieldDescriptor.TYPE_FIXED64),
        ("end_time_unix_nano", FieldDescriptor.TYPE_FIXED64),
    ):
        assert fields[name].type == wire_type, f"Span.{name} changed type"
    assert max(fields[n].number for n in ("trace_id", "span_id", "start_time_unix_nano")) < 16
    # each field: its tag (one byte: field numbers below 16), for the ids their length
    # (one byte), then the value; the times are little-endian 64-bit words
    return struct.Struct("<BB16sBB8sBQBQ")


_ROOT_LAYOUT = _root_ids_and_times_layout()
_TRACE_ID_TAG, _SPAN_ID_TAG = (
    _field_number(PbSpan, "trace_id") << 3 | 2,
    _field_number(PbSpan, "span_id") << 3 | 2,
)
_START_TAG, _END_TAG = (
    _field_number(PbSpan, "start_time_unix_nano") << 3 | 1,  # wire type 1: 64 bits
    _field_number(PbSpan, "end_time_unix_nano") << 3 | 1,
)


def _pack_root_ids_and_times(trace_id: bytes, span_id: bytes, start: int, end: int) -> bytes:
    return _ROOT_LAYOUT.pack(
        _TRACE_ID_TAG, 16, trace_id, _SPAN_ID_TAG, 8, span_id, _START_TAG, start, _END_TAG, end
    )


_RESOURCE_SPANS_TAG = _length_delimited_tag(
    _field_number(trace_service_pb2.ExportTraceServiceRequest, "resource_spans")
)
_SCOPE_SPANS_TAG = _length_delimited_tag(_field_number(ResourceSpans, "scope_spans"))
_SPANS_TAG = _length_delimited_tag(_field_number(ScopeSpans, "spans"))


class SpanEncoder:
    """FinishedSpans -> serialised ExportTraceServiceRequest, equal to the SDK's
    encode_spans once parsed."""

    def __init__(self) -> None:
        # (key, value, type): True == 1 as dict keys, but not as attribute values
        self._attributes: dict[tuple[str, Any, type], KeyValue] = {}
        # by identity: Resource.__hash__ serialises its attributes to JSON on every call (6 us);
        # the resource is kept with its bytes so its id cannot be reused while cached
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        # a span's constant part seen twice: (serialised, the frame of a root span with it);
        # None: seen once
        self._templates: dict[tuple, tuple[bytes, bytes] | None] = {}
        # the same, found by the identity of a span's attribute dict, for the dicts that
        # HttpSpanMemo shares between repeated spans: no tuple of every attribute to hash.
        # An entry keeps its dict, so the id cannot be reused while it is cached.
        self._shared_templates: dict[tuple[int, bool], tuple[dict, str, int, bool, tuple]] = {}
        # the ScopeSpans' fields before its spans: the scope (and its schema URL)
        self._scope_fields = ScopeSpans(
            scope=_encode_instrumentation_scope(SCOPE), schema_url=SCOPE.schema_url
        ).SerializeToString()

    def _key_value(self, key: str, value: Any) -> KeyValue:
        cache_key = (key, value, type(value))
        found = self._attributes.get(cache_key)
        if found is None:
            if len(self._attributes) >= MAX_CACHED_ATTRIBUTES:
                self._attributes.clear()
            try:
                found = _encode_key_value(key, value)
            except ValueError:
                # an int beyond 64 bits, which protobuf refuses (and with it the whole export):
                # the parsers keep traced input below that, so this is a last guard
                found = _encode_key_value(key, str(value))
            self._attributes[cache_key] = found
        return found

    def _resource_fields(self, resource: Resource) -> bytes:
        """A ResourceSpans' fields but its scope spans: the resource and its schema URL."""
        found = self._resources.get(id(resource))
        if found is None:
            if len(self._resources) >= MAX_CACHED_RESOURCES:
                self._resources.clear()
            fields = ResourceSpans(
                resource=_encode_resource(resource), schema_url=resource.schema_url
            ).SerializeToString()
            found = self._resources[id(resource)] = (resource, fields)
        return found[1]

    def encode(self, spans: Sequence[FinishedSpan]) -> bytes:
        # grouped as the SDK groups them: by resource in order of first appearance, one scope
        # (equal resources of distinct objects get one group each: the agent has one per process)
        groups: dict[int, tuple[Resource, list[bytes]]] = {}
        add_span = self._add_span
        for span in spans:
            resource = span.resource
            group = groups.get(id(resource))
            if group is None:
                group = groups[id(resource)] = (resource, [])
            add_span(group[1], span)
        request = []
        for resource, span_parts in groups.values():
            scope_spans = self._scope_fields + b"".join(span_parts)
            resource_spans = (
                self._resource_fields(resource)
                + _SCOPE_SPANS_TAG
                + _varint(len(scope_spans))
                + scope_spans
            )
            request.append(_RESOURCE_SPANS_TAG + _varint(len(resource_spans)) + resource_spans)
        return b"".join(request)

    def _add_span(self, parts: list[bytes], span: FinishedSpan) -> None:
        """Appends the span's framing, its ids and times, and its constant part to parts."""
        record = span.record
        parent_span_id = span.parent_span_id
        attributes = record.attributes
        root = parent_span_id is None and span.trace_state is None
        if root:  # fixed-size fields
            ids_and_times = _pack_root_ids_and_times(
                span.trace_id.to_bytes(16, "big"),
                span.span_id.to_bytes(8, "big"),
                record.start_ns,
                record.end_ns,
            )
        else:
            ids_and_times = PbSpan(
                trace_id=span.trace_id.to_bytes(16, "big"),
                span_id=span.span_id.to_bytes(8, "big"),
                trace_state=span.trace_state,
                parent_span_id=None
                if parent_span_id is None
                else parent_span_id.to_bytes(8, "big"),
                start_time_unix_nano=record.start_ns,
                end_time_unix_nano=record.end_ns,
            ).SerializeToString()
        shared_key = (id(attributes), parent_span_id is None)
        shared = self._shared_templates.get(shared_key)
        template_key: tuple | None = None
        if (
            shared is not None
            and shared[1] == record.name
            and shared[2] == record.kind._value_
            and shared[3] == record.is_error
        ):
            template: tuple[bytes, bytes] | None = shared[4]
        else:
            try:  # with the types: True == 1, but not as attribute values
                template_key = (
                    record.name,
                    record.kind._value_,  # an enum member's hash is a Python call; its value's not
                    record.is_error,
                    parent_span_id is None,
                    tuple(attributes.items()),
                    tuple(map(type, attributes.values())),
                )
                template = self._templates.get(template_key)
            except TypeError:  # an unhashable value (a list): no template
                template_key, template = None, None
            if template is not None:
                if len(self._shared_templates) >= MAX_CACHED_TEMPLATES:
                    self._shared_templates.clear()
                self._shared_templates[shared_key] = (
                    attributes,
                    record.name,
                    record.kind._value_,
                    record.is_error,
                    template,
                )
        if template is not None:
            constant, root_frame = template
            if root:  # a root's ids and times have one size: its frame is the template's
                parts += (root_frame, ids_and_times, constant)
            else:
                frame = _SPANS_TAG + _varint(len(ids_and_times) + len(constant))
                parts += (frame, ids_and_times, constant)
            return
        message = PbSpan(
            name=record.name,
            kind=_KIND[record.kind],
            status=_ERROR if record.is_error else _UNSET,
            flags=_ROOT_FLAGS if parent_span_id is None else _CHILD_FLAGS,
        )
        key_value = self._key_value
        message.attributes.extend(
            key_value(key, value)
            if type(value) in _SCALARS
            else _encode_attributes({key: value})[0]  # arrays: rare, the SDK's encoder
            for key, value in attributes.items()
        )
        constant = message.SerializeToString()
        parts += (_SPANS_TAG + _varint(len(ids_and_times) + len(constant)), ids_and_times, constant)
        if template_key is None:
            return
        if len(self._templates) >= MAX_CACHED_TEMPLATES:
            self._templates.clear()
        # the first sighting only marks the set: a set never seen again is not kept
        self._templates[template_key] = (
            (constant, _SPANS_TAG + _varint(_ROOT_LAYOUT.size + len(constant)))
            if template_key in self._templates
            else None
        )


_EXPORT_METHOD = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].methods_by_name[
    "Export"
]


class _SerializedTraceServiceStub:
    """TraceService's Export, for a request serialised already: no serialiser on the way out."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export = channel.unary_unary(
            f"/{_EXPORT_METHOD.containing_service.full_name}/{_EXPORT_METHOD.name}",
            request_serializer=None,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )


class GrpcSpanExporter(GrpcOtlpSpanExporter):
    """The SDK's OTLP/gRPC span exporter, sending what SpanEncoder serialised."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not (hasattr(self, "_stub") and hasattr(self, "_client") and hasattr(self, "_channel")):
            raise SetupError(
                "the installed opentelemetry-exporter-otlp-proto-grpc keeps no stub the agent "
                "can give serialised spans to",
                "install the version pyproject.toml names (./setup.sh does)",
            )
        # the SDK makes its client from _stub, here and again when it reconnects
        self._stub = _SerializedTraceServiceStub
        self._client = self._stub(self._channel)
        self._encoder = SpanEncoder()

    def _translate_data(self, data: Sequence[FinishedSpan]) -> bytes:  # type: ignore[override]
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
            serialized = self._encoder.encode(spans)
        except Exception as error:  # one bad batch costs that batch
            log.error("failed to encode a span batch: %s", error)
            return SpanExportResult.FAILURE
        result = self._client.export(serialized)
        if getattr(result, "success", False):
            return SpanExportResult.SUCCESS
        log.warning("OTLP/HTTP span export failed: %s", getattr(result, "error", result))
        return SpanExportResult.FAILURE
