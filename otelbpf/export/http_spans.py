"""Span building: an HTTP/1 exchange becomes a span description and metric attributes.

Pure functions over the domain type, following the stable OpenTelemetry HTTP semantic
conventions (names from the opentelemetry-semantic-conventions package). No SDK objects here:
the tracing stage turns a SpanRecord into an SDK span.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.semconv._incubating.attributes.http_attributes import (
    HTTP_REQUEST_BODY_SIZE,
    HTTP_RESPONSE_BODY_SIZE,
)
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS, CLIENT_PORT
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import (
    URL_FULL,
    URL_PATH,
    URL_QUERY,
    URL_SCHEME,
)
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL
from opentelemetry.trace import SpanKind

from otelbpf.abi import ExchangeFlag, Role
from otelbpf.exchange import Exchange
from otelbpf.protocols.http1 import RequestHead
from otelbpf.urls import origin_for_url, redact_query, route_of, split_target

KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
OTHER_METHOD = "_OTHER"
DEFAULT_PORTS = {"http": 80, "https": 443}
_HEAD_END = b"\r\n\r\n"

AttributeValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class SpanRecord:
    name: str
    kind: SpanKind
    start_ns: int
    end_ns: int
    attributes: dict[str, AttributeValue]
    is_error: bool
    traceparent: str | None  # the request's W3C trace context, to continue its trace
    metric_attributes: dict[str, AttributeValue]
    duration_metric: str = "http"  # which duration histogram: "http" or "rpc"


@dataclass(frozen=True, slots=True)
class SpanOptions:
    keep_query_values: bool = False  # credentials often ride in query strings


def split_host(host: str | None) -> tuple[str | None, int | None]:
    """'example.com:8080' -> ('example.com', 8080); '[::1]:80' -> ('::1', 80)."""
    if not host:
        return None, None
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None, None
        rest = host[end + 1 :]
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
        return host[1:end], port
    name, sep, port_text = host.rpartition(":")
    if sep and port_text.isdigit():
        return name, int(port_text)
    return host, None


def _body_size(total_bytes: int, head: bytes, declared: int | None) -> int | None:
    """Bytes after the head: exact when the head ended inside the capture."""
    end = head.find(_HEAD_END)
    if end >= 0:
        return max(0, total_bytes - end - len(_HEAD_END))
    return declared


def _method(request: RequestHead, attributes: dict[str, AttributeValue]) -> str:
    if request.method in KNOWN_METHODS:
        attributes[HTTP_REQUEST_METHOD] = request.method
        return request.method
    attributes[HTTP_REQUEST_METHOD] = OTHER_METHOD
    attributes[HTTP_REQUEST_METHOD_ORIGINAL] = request.method
    return "HTTP"


def http_span(exchange: Exchange, options: SpanOptions) -> SpanRecord:
    """Build the span of an exchange the protocol stage parsed as HTTP/1."""
    request = exchange.http_request
    response = exchange.http_response
    assert request is not None
    attributes: dict[str, AttributeValue] = {}
    scheme = "https" if exchange.flags & ExchangeFlag.TLS else "http"
    method = _method(request, attributes)
    # an empty target: not known (an HTTP/2 stream whose :path the agent could not decode)
    path, query = split_target(request.target) if request.target else (None, None)
    route = route_of(path) if path else None
    status = response.status_code if response is not None else None
    host_name, host_port = split_host(request.host)
    attributes[NETWORK_PROTOCOL_VERSION] = request.version
    if status is not None:
        attributes[HTTP_RESPONSE_STATUS_CODE] = status
    redacted_query = None if query is None else redact_query(query, options.keep_query_values)

    if exchange.role == Role.SERVER:
        kind = SpanKind.SERVER
        local = exchange.local
        server_address = host_name or (local.address if local else None)
        server_port = host_port or (local.port if local and local.port else None)
        attributes[URL_SCHEME] = scheme
        if path is not None:
            attributes[URL_PATH] = path
            attributes[HTTP_ROUTE] = route
        if redacted_query is not None:
            attributes[URL_QUERY] = redacted_query
        if exchange.peer is not None:
            attributes[CLIENT_ADDRESS] = exchange.peer.address
            attributes[CLIENT_PORT] = exchange.peer.port
        if request.user_agent:
            attributes[USER_AGENT_ORIGINAL] = request.user_agent
        request_body = _body_size(
            exchange.request_bytes, exchange.request_head, request.content_length
        )
        if request_body is not None:
            attributes[HTTP_REQUEST_BODY_SIZE] = request_body
        if response is not None:
            response_body = exchange.response_body_size
            if response_body is None:
                response_body = _body_size(
                    exchange.response_bytes, exchange.response_head, response.content_length
                )
            if response_body is not None:
                attributes[HTTP_RESPONSE_BODY_SIZE] = response_body
        is_error = status is not None and status >= 500
    else:
        kind = SpanKind.CLIENT
        peer = exchange.peer
        server_address = host_name or (peer.address if peer else None)
        # the port the request names (through a proxy, the peer is the proxy)
        if host_name:
            server_port = host_port or DEFAULT_PORTS.get(scheme)
        else:
            server_port = peer.port if peer else None
        if path is not None:
            origin = origin_for_url(scheme, server_address or "", server_port)
            full = origin + path + ("" if redacted_query is None else "?" + redacted_query)
            attributes[URL_FULL] = full
        is_error = status is not None and status >= 400

    if is_error:
        # the conventions' error.type for an HTTP failure is the status code as a string
        attributes[ERROR_TYPE] = str(status)
    if server_address:
        attributes[SERVER_ADDRESS] = server_address
    if server_port:
        attributes[SERVER_PORT] = server_port

    metric_attributes: dict[str, AttributeValue] = {
        HTTP_REQUEST_METHOD: attributes[HTTP_REQUEST_METHOD],
        NETWORK_PROTOCOL_VERSION: request.version,
    }
    if kind is SpanKind.SERVER:
        if route is not None:
            metric_attributes[HTTP_ROUTE] = route
        metric_attributes[URL_SCHEME] = scheme
    if status is not None:
        metric_attributes[HTTP_RESPONSE_STATUS_CODE] = status
    if is_error:
        metric_attributes[ERROR_TYPE] = str(status)
    if server_port:
        metric_attributes[SERVER_PORT] = server_port
    if kind is SpanKind.CLIENT and server_address:
        metric_attributes[SERVER_ADDRESS] = server_address

    return SpanRecord(
        name=f"{method} {route}" if route else method,  # the conventions' name, route unknown
        kind=kind,
        start_ns=exchange.start_ns,
        end_ns=max(exchange.end_ns, exchange.start_ns),
        attributes=attributes,
        is_error=is_error,
        traceparent=request.traceparent,
        metric_attributes=metric_attributes,
    )
