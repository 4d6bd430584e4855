"""Span building: an HTTP/1 exchange becomes a span description and metric attributes.

Pure functions over the domain type, following the stable OpenTelemetry HTTP semantic
conventions (names from the opentelemetry-semantic-conventions package). No SDK objects here:
the tracing stage turns a SpanRecord into an SDK span.

HttpSpanMemo is http_span for the agent's hot path: an exchange that repeats one seen before
(the same parsed heads, addresses and sizes: a keep-alive client polling one URL) gets the
earlier span's description, attribute dicts included, with only its times its own. Shared
dicts are read-only from here on; the encoder and the histograms recognise them by identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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
from otelbpf.frozen import fast_constructor
from otelbpf.urls import (
    absolute_target_origin,
    origin_for_url,
    redact_path_parameters,
    redact_query,
    route_of,
    split_target,
)

KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
OTHER_METHOD = "_OTHER"
DEFAULT_PORTS = {"http": 80, "https": 443}
# Per exchange: & on an IntFlag goes through the enum machinery, an int's & does not; an
# enum member read from a global costs less than from its class.
_TLS_BIT = int(ExchangeFlag.TLS)
_SERVER = Role.SERVER
_SPAN_SERVER = SpanKind.SERVER
_SPAN_CLIENT = SpanKind.CLIENT

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
    tracestate: str | None = None  # what came with traceparent, kept with the continued trace


@dataclass(frozen=True, slots=True)
class SpanOptions:
    keep_query_values: bool = False  # credentials often ride in query strings


@lru_cache(maxsize=1024)  # a server answers to few Host values, a client calls few hosts
def split_host(host: str | None) -> tuple[str | None, int | None]:
    """'example.com:8080' -> ('example.com', 8080); '[::1]:80' -> ('::1', 80).

    An empty port is no port ('example.com:' -> ('example.com', None), RFC 3986 3.2.3); a
    zone id's delimiter comes unescaped ('[fe80::1%25eth0]' -> 'fe80::1%eth0', RFC 6874:
    the address, which origin_for_url escapes again); an IPv6 address without brackets has
    no port to tell apart ('::1' -> ('::1', None)).
    """
    if not host:
        return None, None
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None, None
        address = host[1:end]
        zone = address.find("%")
        if zone >= 0 and address.startswith("25", zone + 1):
            address = address[: zone + 1] + address[zone + 3 :]
        rest = host[end + 1 :]
        return address, _port(rest[1:]) if rest.startswith(":") else None
    name, sep, port_text = host.rpartition(":")
    if not sep or ":" in name:
        return host, None
    if not port_text:
        return name or None, None
    port = _port(port_text)
    if port is not None:
        return name, port
    return host, None


def _port(text: str) -> int | None:
    """A TCP port, or None."""
    port = decimal_value(text) if len(text) <= 5 else None
    return port if port is not None and port <= 65535 else None


def decimal_value(text: str | None) -> int | None:
    """A header's value as a number, when it is one: ASCII digits only (str.isdigit() takes
    '²', which int() refuses), and few enough to fit an OTLP int attribute's 64 bits (a
    bigger one made protobuf refuse the whole export)."""
    if text and len(text) <= 18 and text.isascii() and text.isdigit():
        return int(text)
    return None


def _body_size(
    total_bytes: int, head_size: int | None, declared: int | None, transfer_encoding: str | None
) -> int | None:
    """Bytes after the head: exact when the head ended inside the capture, else the declared
    Content-Length, which a Transfer-Encoding overrides (RFC 9112 6.3 rule 3: unknown)."""
    if head_size is not None:
        return max(0, total_bytes - head_size)
    return None if transfer_encoding else declared


# Responses without a body whatever their header fields say (RFC 9112 6.3 rule 1): 1xx, 204
# and 304 (and any response to HEAD; a 2xx to CONNECT starts a tunnel, rule 2).
_BODYLESS_STATUS = frozenset((*range(100, 200), 204, 304))


@lru_cache(maxsize=4096)  # routes are few; paths repeat (and a miss costs little more)
def _route(path: str) -> str:
    return route_of(path)


_origin = lru_cache(maxsize=1024)(origin_for_url)  # a client calls few origins


def http_span(exchange: Exchange, options: SpanOptions) -> SpanRecord:
    """Build the span of an exchange the protocol stage parsed as HTTP/1."""
    request = exchange.http_request
    response = exchange.http_response
    assert request is not None
    attributes: dict[str, AttributeValue] = {}
    scheme = "https" if int(exchange.flags) & _TLS_BIT else "http"
    request_method = request.method
    if request_method in KNOWN_METHODS:
        method = metric_method = attributes[HTTP_REQUEST_METHOD] = request_method
    else:
        metric_method = attributes[HTTP_REQUEST_METHOD] = OTHER_METHOD
        attributes[HTTP_REQUEST_METHOD_ORIGINAL] = request_method
        method = "HTTP"
    # an empty target: not known (an HTTP/2 stream whose :path the agent could not decode)
    target = request.target
    path, query = split_target(target) if target else (None, None)
    if path is not None and ";" in path:  # the values of path parameters: a session id, say
        path = redact_path_parameters(path, options.keep_query_values)
    route = _route(path) if path else None
    status = response.status_code if response is not None else None
    if status is not None and status < 200 and status != 101:
        status = None  # an interim response (HTTP/1's are skipped by the parser): not the answer
    host = request.host
    if target and target[0] != "/" and target != "*":
        # absolute-form (through a proxy): the target's authority, not Host (RFC 9112 3.2.2)
        origin = absolute_target_origin(target)
        if origin is not None:
            target_scheme, host = origin
            if target_scheme in DEFAULT_PORTS:  # not any word a client sent: a metric's value
                scheme = target_scheme
    host_name, host_port = split_host(host)
    version = attributes[NETWORK_PROTOCOL_VERSION] = request.version
    if status is not None:
        attributes[HTTP_RESPONSE_STATUS_CODE] = status
    redacted_query = None if query is None else redact_query(query, options.keep_query_values)

    if exchange.role == _SERVER:
        kind = _SPAN_SERVER
        local = exchange.local
        server_address = host_name or (local.address if local else None)
        server_port = host_port or (local.port if local and local.port else None)
        attributes[URL_SCHEME] = scheme
        if path is not None:
            attributes[URL_PATH] = path
            attributes[HTTP_ROUTE] = route
        if redacted_query is not None:
            attributes[URL_QUERY] = redacted_query
        peer = exchange.peer
        if peer is not None:
            attributes[CLIENT_ADDRESS] = peer.address
            attributes[CLIENT_PORT] = peer.port
        if request.user_agent:
            attributes[USER_AGENT_ORIGINAL] = request.user_agent
        request_body = exchange.request_body_size  # counted (HTTP/2's DATA), else from the head
        if request_body is None:
            request_body = _body_size(
                exchange.request_bytes,
                request.head_size,
                request.content_length,
                request.transfer_encoding,
            )
        if request_body is not None:
            attributes[HTTP_REQUEST_BODY_SIZE] = request_body
        if status is not None:
            response_body = exchange.response_body_size
            if response_body is None:
                if (
                    status in _BODYLESS_STATUS
                    or request_method == "HEAD"
                    or (request_method == "CONNECT" and status < 300)
                ):
                    response_body = 0  # what follows the head: the next response, or a tunnel
                else:
                    response_body = _body_size(
                        exchange.response_bytes,
                        response.head_size,
                        response.content_length,
                        response.transfer_encoding,
                    )
            if response_body is not None:
                attributes[HTTP_RESPONSE_BODY_SIZE] = response_body
        is_error = status is not None and status >= 500
    else:
        kind = _SPAN_CLIENT
        peer = exchange.peer
        server_address = host_name or (peer.address if peer else None)
        # the port the request names (through a proxy, the peer is the proxy)
        if host_name:
            server_port = host_port or DEFAULT_PORTS.get(scheme)
        else:
            server_port = peer.port if peer else None
        if path is not None:
            origin = _origin(scheme, server_address or "", server_port)
            full = origin + path + ("" if redacted_query is None else "?" + redacted_query)
            attributes[URL_FULL] = full
        is_error = status is not None and status >= 400

    if is_error:
        # the conventions' error.type for an HTTP failure is the status code as a string
        error_type = attributes[ERROR_TYPE] = str(status)
    if server_address:
        attributes[SERVER_ADDRESS] = server_address
    if server_port:
        attributes[SERVER_PORT] = server_port

    metric_attributes: dict[str, AttributeValue] = {
        HTTP_REQUEST_METHOD: metric_method,
        NETWORK_PROTOCOL_VERSION: version,
    }
    if kind is _SPAN_SERVER:
        if route is not None:
            metric_attributes[HTTP_ROUTE] = route
        metric_attributes[URL_SCHEME] = scheme
    if status is not None:
        metric_attributes[HTTP_RESPONSE_STATUS_CODE] = status
    if is_error:
        metric_attributes[ERROR_TYPE] = error_type
    if kind is _SPAN_CLIENT:  # Required on the client metric, Opt-In on the server's
        if server_port:
            metric_attributes[SERVER_PORT] = server_port
        if server_address:
            metric_attributes[SERVER_ADDRESS] = server_address

    start_ns = exchange.start_ns
    end_ns = exchange.end_ns
    return _span_record(
        f"{method} {route}" if route else method,  # the conventions' name, route unknown
        kind,
        start_ns,
        end_ns if end_ns > start_ns else start_ns,
        attributes,
        is_error,
        request.traceparent,
        metric_attributes,
        "http",
        request.tracestate,
    )


_span_record = fast_constructor(SpanRecord)


MEMO_CAPACITY = 4096  # descriptions remembered; cleared when full (a churn costs a rebuild)


class HttpSpanMemo:
    """http_span, with the description of a repeated exchange built once.

    The key holds object identities: the parsed heads (protocols/classify.HeadMemo returns the
    same object for the same bytes) and the addresses (decode caches them). Each entry keeps
    those objects alive, so no identity in a live key can be reused by another object."""

    def __init__(self, options: SpanOptions, capacity: int = MEMO_CAPACITY) -> None:
        self._options = options
        self._capacity = capacity
        self._described: dict[tuple, tuple[SpanRecord, tuple]] = {}

    def __len__(self) -> int:
        return len(self._described)

    def describe(self, exchange: Exchange) -> SpanRecord:
        request = exchange.http_request
        response = exchange.http_response
        local = exchange.local
        peer = exchange.peer
        key = (
            id(request),
            id(response),
            id(local),
            id(peer),
            exchange.role._value_,  # an enum member's hash is a Python call; its value's is not
            exchange.flags._value_,
            exchange.request_bytes,
            exchange.response_bytes,
            exchange.request_body_size,
            exchange.response_body_size,
        )
        found = self._described.get(key)
        if found is None:
            record = http_span(exchange, self._options)
            if len(self._described) >= self._capacity:
                self._described.clear()
            self._described[key] = (record, (request, response, local, peer))
            return record
        record = found[0]
        start_ns = exchange.start_ns
        end_ns = exchange.end_ns
        return _span_record(
            record.name,
            record.kind,
            start_ns,
            end_ns if end_ns > start_ns else start_ns,
            record.attributes,
            record.is_error,
            record.traceparent,
            record.metric_attributes,
            record.duration_metric,
            record.tracestate,
        )
