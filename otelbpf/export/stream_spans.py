"""Span building for HTTP/2 streams: gRPC calls by the RPC conventions, the rest as HTTP.

A finished stream from the HTTP/2 tracker becomes a SpanRecord. gRPC (content-type
application/grpc): rpc.system grpc, rpc.service, rpc.method, rpc.grpc.status_code from the
trailers (or a trailers-only response), name "service/method". Plain HTTP/2 reuses the HTTP/1
builder with network.protocol.version "2". Attribute names come from the semantic-conventions
package (the RPC ones are still incubating there).

A stream ended by RST_STREAM (or left out by the server's GOAWAY, which amounts to
REFUSED_STREAM) before any grpc-status gets the status gRPC itself gives the call for that
code (PROTOCOL-HTTP2.md, "Errors"): a client's CANCEL is CANCELLED, which is no server error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from opentelemetry.semconv._incubating.attributes.rpc_attributes import (
    RPC_GRPC_STATUS_CODE,
    RPC_METHOD,
    RPC_SERVICE,
    RPC_SYSTEM,
)
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS, CLIENT_PORT
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.trace import SpanKind

from otelbpf.abi import ExchangeFlag, Role
from otelbpf.exchange import Exchange, Protocol, SocketAddress
from otelbpf.export.http_spans import (
    AttributeValue,
    SpanOptions,
    SpanRecord,
    decimal_value,
    http_span,
    split_host,
)
from otelbpf.protocols.http1 import RequestHead, ResponseHead
from otelbpf.protocols.http2 import UNKNOWN_HEADER, Stream

# An attribute of our own: the stream's headers referenced an HPACK table the agent never saw
# (it joined the connection mid-way), so some of what a span would say is not known.
HEADERS_INCOMPLETE = "otelbpf.http2.headers_incomplete"
GRPC = "grpc"
GRPC_OK = 0
GRPC_STATUS_UNKNOWN = 2
# The conventions' gRPC server rule: these codes mean the server failed; others are the
# caller's (and ERROR on the client side, where any non-OK code is an error).
GRPC_SERVER_ERRORS = frozenset((2, 4, 12, 13, 14, 15))
GRPC_CANCELLED, GRPC_RESOURCE_EXHAUSTED, GRPC_PERMISSION_DENIED = 1, 8, 7
GRPC_INTERNAL, GRPC_UNAVAILABLE = 13, 14
# RFC 9113 7's error codes, by value: the names error.type gives a plain HTTP/2 reset
HTTP2_ERROR_NAMES = (
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
)
# gRPC's PROTOCOL-HTTP2.md ("Errors"): the status of a call reset with each code. STREAM_CLOSED
# and HTTP_1_1_REQUIRED, which it leaves out, are INTERNAL as in grpc-go; a code past the
# RFC's is UNKNOWN, as in grpc-go.
RST_TO_GRPC = {
    0x0: GRPC_INTERNAL,  # NO_ERROR: an OK status should have been sent
    0x1: GRPC_INTERNAL,  # PROTOCOL_ERROR
    0x2: GRPC_INTERNAL,  # INTERNAL_ERROR
    0x3: GRPC_INTERNAL,  # FLOW_CONTROL_ERROR
    0x4: GRPC_INTERNAL,  # SETTINGS_TIMEOUT
    0x5: GRPC_INTERNAL,  # STREAM_CLOSED
    0x6: GRPC_INTERNAL,  # FRAME_SIZE_ERROR
    0x7: GRPC_UNAVAILABLE,  # REFUSED_STREAM: not processed, may be retried
    0x8: GRPC_CANCELLED,  # CANCEL
    0x9: GRPC_INTERNAL,  # COMPRESSION_ERROR
    0xA: GRPC_INTERNAL,  # CONNECT_ERROR
    0xB: GRPC_RESOURCE_EXHAUSTED,  # ENHANCE_YOUR_CALM
    0xC: GRPC_PERMISSION_DENIED,  # INADEQUATE_SECURITY
    0xD: GRPC_INTERNAL,  # HTTP_1_1_REQUIRED
}
HTTP2_CANCEL = 0x8  # RFC 9113 7: the stream is no longer needed
# a stream reset by no RST_STREAM: its connection closed (or its process exited) first
CONNECTION_CLOSED = "connection_closed"


def grpc_status_of_reset(code: int) -> int:
    return RST_TO_GRPC.get(code, GRPC_STATUS_UNKNOWN)


def reset_error_type(stream: Stream) -> str:
    """error.type of a stream reset before it answered: the RST_STREAM code's name."""
    code = stream.reset_code
    if code is None:
        return CONNECTION_CLOSED
    return HTTP2_ERROR_NAMES[code] if code < len(HTTP2_ERROR_NAMES) else hex(code)


@dataclass(frozen=True, slots=True)
class StreamConnection:
    """What the connection tells about every stream on it."""

    pid: int
    tid: int
    fd: int
    conn_id: int
    role: Role
    tls: bool
    local: SocketAddress | None
    peer: SocketAddress | None
    comm: str = ""


def is_grpc(stream: Stream) -> bool:
    """content-type application/grpc; or, when that was not decodable (joined mid-connection),
    gRPC's own headers (grpc-*) or its "te: trailers" request header."""
    content_type = stream.header("content-type") or stream.header("content-type", "response")
    if content_type:
        return content_type.startswith("application/grpc")
    if stream.header("te") == "trailers":
        return True
    headers = stream.request_headers + stream.response_headers + stream.trailers
    return any(name.startswith("grpc-") for name, _ in headers)


def _grpc_status(stream: Stream) -> int | None:
    for which in ("trailers", "response"):
        status = decimal_value(stream.header("grpc-status", which))
        if status is not None:
            return status
    return None


def grpc_span(stream: Stream, conn: StreamConnection) -> SpanRecord:
    path = stream.header(":path")
    service, method = None, None
    if path and path.startswith("/") and path.count("/") == 2:
        service, method = path[1:].split("/")
    status = _grpc_status(stream)
    if status is None and stream.reset_code is not None:
        status = grpc_status_of_reset(stream.reset_code)  # what the call ends with in gRPC
    # No readable grpc-status and no RST_STREAM: a stream reset by its connection's close
    # failed; a stream whose trailers referenced HPACK entries the agent never saw ended
    # normally as far as anyone can tell (not an error); a complete stream that ended
    # without one broke the protocol.
    failed_unknown = stream.reset or not stream.partial
    kind = SpanKind.SERVER if conn.role == Role.SERVER else SpanKind.CLIENT
    attributes: dict[str, AttributeValue] = {RPC_SYSTEM: GRPC, NETWORK_PROTOCOL_VERSION: "2"}
    if service:
        attributes[RPC_SERVICE] = service
        attributes[RPC_METHOD] = method or ""
    if status is not None:
        attributes[RPC_GRPC_STATUS_CODE] = status
    host, host_port = split_host(stream.header(":authority"))
    if kind is SpanKind.SERVER:
        server_address = host or (conn.local.address if conn.local else None)
        server_port = host_port or (conn.local.port if conn.local and conn.local.port else None)
        if conn.peer is not None:
            attributes[CLIENT_ADDRESS] = conn.peer.address
            attributes[CLIENT_PORT] = conn.peer.port
        is_error = status in GRPC_SERVER_ERRORS if status is not None else failed_unknown
    else:
        server_address = host or (conn.peer.address if conn.peer else None)
        server_port = conn.peer.port if conn.peer else host_port
        is_error = status != GRPC_OK if status is not None else failed_unknown
    if server_address:
        attributes[SERVER_ADDRESS] = server_address
    if server_port:
        attributes[SERVER_PORT] = server_port
    if is_error:
        if status is not None:
            attributes[ERROR_TYPE] = str(status)
        else:
            attributes[ERROR_TYPE] = CONNECTION_CLOSED if stream.reset else "missing grpc-status"
    if stream.partial:
        attributes[HEADERS_INCOMPLETE] = True
    metric_attributes: dict[str, AttributeValue] = {RPC_SYSTEM: GRPC}
    for key in (RPC_SERVICE, RPC_METHOD, RPC_GRPC_STATUS_CODE, SERVER_PORT, ERROR_TYPE):
        if key in attributes:
            metric_attributes[key] = attributes[key]
    start = stream.start_ns or 0
    return SpanRecord(
        name=f"{service}/{method}" if service else GRPC,
        kind=kind,
        start_ns=start,
        end_ns=max(start, stream.end_ns or start),
        attributes=attributes,
        is_error=is_error,
        traceparent=stream.header("traceparent"),
        metric_attributes=metric_attributes,
        duration_metric="rpc",
        tracestate=_known(stream.header("tracestate")),
    )


def _known(value: str | None) -> str | None:
    return None if value in (None, "", UNKNOWN_HEADER) else value


def http2_span(stream: Stream, conn: StreamConnection, options: SpanOptions) -> SpanRecord:
    """Plain HTTP/2: the HTTP builder, fed from pseudo-headers instead of a request line."""
    request = RequestHead(
        method=_known(stream.header(":method")) or "_OTHER",
        target=_known(stream.header(":path")) or "",  # empty: not known, and not invented
        version="2",
        host=_known(stream.header(":authority")),
        user_agent=_known(stream.header("user-agent")),
        content_length=decimal_value(stream.header("content-length")),
        transfer_encoding=None,
        traceparent=_known(stream.header("traceparent")),
        tracestate=_known(stream.header("tracestate")),
        complete=not stream.partial,
    )
    status = decimal_value(stream.header(":status", "response"))
    response = None
    if status is not None:
        response = ResponseHead("2", status, "", None, None, True)
    exchange = Exchange(
        pid=conn.pid,
        tid=conn.tid,
        fd=conn.fd,
        conn_id=conn.conn_id,
        role=conn.role,
        flags=ExchangeFlag.TLS if conn.tls else ExchangeFlag(0),
        start_ns=stream.start_ns or 0,
        end_ns=stream.end_ns or stream.start_ns or 0,
        request_bytes=stream.request_data,
        response_bytes=stream.response_data,
        local=conn.local,
        peer=conn.peer,
        comm=conn.comm,
        request_head=b"",
        response_head=b"",
        protocol=Protocol.HTTP2,
        http_request=request,
        http_response=response,
        request_body_size=stream.request_data,
        response_body_size=stream.response_data,
    )
    span = http_span(exchange, options)
    if stream.partial:
        span.attributes[HEADERS_INCOMPLETE] = True
    if stream.reset and response is None:
        # reset before any response: the request failed, and error.type says how (the HTTP
        # conventions' rule for a failure before a status code was received or sent)
        error_type = reset_error_type(stream)
        span.attributes[ERROR_TYPE] = error_type
        span.metric_attributes[ERROR_TYPE] = error_type
        # a client's CANCEL (a browser navigating away) is the caller's doing, no failure of
        # the server's: as a 4xx, and as gRPC's CANCELLED on a server span, it is no ERROR
        cancelled_by_client = conn.role == Role.SERVER and stream.reset_code == HTTP2_CANCEL
        span = dataclasses.replace(span, is_error=not cancelled_by_client)
    return span
