"""Exchanges built by hand -> protocol classification -> the span record and metric attributes."""

from __future__ import annotations

import dataclasses

import pytest
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
from otelbpf.exchange import Exchange, Protocol, SocketAddress
from otelbpf.export.http_spans import (
    HttpSpanMemo,
    SpanOptions,
    SpanRecord,
    http_span,
    split_host,
)
from otelbpf.protocols.classify import classify
from otelbpf.protocols.http1 import ResponseHead

T0 = 1_700_000_000_000_000_000
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SERVER_LOCAL = SocketAddress("10.0.0.5", 8080)
SERVER_PEER = SocketAddress("10.0.0.7", 51234)
CLIENT_LOCAL = SocketAddress("10.0.0.7", 51234)
CLIENT_PEER = SocketAddress("93.184.216.34", 80)
_UNSET = object()


def make_exchange(
    role: Role,
    request: bytes,
    response: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    *,
    request_bytes: int | None = None,
    response_bytes: int | None = None,
    local: SocketAddress | None | object = _UNSET,
    peer: SocketAddress | None | object = _UNSET,
    start_ns: int = T0,
    end_ns: int = T0 + 2_500_000,
) -> Exchange:
    if local is _UNSET:
        local = SERVER_LOCAL if role == Role.SERVER else CLIENT_LOCAL
    if peer is _UNSET:
        peer = SERVER_PEER if role == Role.SERVER else CLIENT_PEER
    return Exchange(
        pid=4242,
        tid=4243,
        fd=7,
        conn_id=1,
        role=role,
        flags=ExchangeFlag(0),
        start_ns=start_ns,
        end_ns=end_ns,
        request_bytes=len(request) if request_bytes is None else request_bytes,
        response_bytes=len(response) if response_bytes is None else response_bytes,
        local=local,
        peer=peer,
        comm="app",
        request_head=request,
        response_head=response,
    )


def span_of(exchange: Exchange, options: SpanOptions | None = None) -> SpanRecord:
    assert classify(exchange) is Protocol.HTTP1
    assert exchange.protocol is Protocol.HTTP1
    return http_span(exchange, options or SpanOptions())


def status_response(code: int, reason: str = "X") -> bytes:
    return f"HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\n\r\n".encode()


# ---------------------------------------------------------------- server spans

SERVER_REQUEST = (
    b"GET /users/42?token=s3cret&page=2 HTTP/1.1\r\n"
    b"Host: api.example.com:8443\r\n"
    b"User-Agent: curl/8.5.0\r\n"
    b"traceparent: " + TP.encode() + b"\r\n"
    b"\r\n"
)
SERVER_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def test_server_span_exact() -> None:
    span = span_of(make_exchange(Role.SERVER, SERVER_REQUEST, SERVER_RESPONSE))
    assert span == SpanRecord(
        name="GET /users/{id}",
        kind=SpanKind.SERVER,
        start_ns=T0,
        end_ns=T0 + 2_500_000,
        attributes={
            HTTP_REQUEST_METHOD: "GET",
            NETWORK_PROTOCOL_VERSION: "1.1",
            HTTP_RESPONSE_STATUS_CODE: 200,
            URL_SCHEME: "http",
            URL_PATH: "/users/42",
            URL_QUERY: "token=REDACTED&page=REDACTED",
            HTTP_ROUTE: "/users/{id}",
            CLIENT_ADDRESS: "10.0.0.7",
            CLIENT_PORT: 51234,
            USER_AGENT_ORIGINAL: "curl/8.5.0",
            HTTP_REQUEST_BODY_SIZE: 0,
            HTTP_RESPONSE_BODY_SIZE: 5,
            SERVER_ADDRESS: "api.example.com",
            SERVER_PORT: 8443,
        },
        is_error=False,
        traceparent=TP,
        metric_attributes={
            HTTP_REQUEST_METHOD: "GET",
            NETWORK_PROTOCOL_VERSION: "1.1",
            HTTP_ROUTE: "/users/{id}",
            URL_SCHEME: "http",
            HTTP_RESPONSE_STATUS_CODE: 200,
        },
    )


def test_server_query_values_kept_when_asked() -> None:
    span = span_of(
        make_exchange(Role.SERVER, SERVER_REQUEST, SERVER_RESPONSE),
        SpanOptions(keep_query_values=True),
    )
    assert span.attributes[URL_QUERY] == "token=s3cret&page=2"
    assert span.attributes[URL_PATH] == "/users/42"


def test_tls_exchanges_are_https() -> None:
    exchange = make_exchange(Role.SERVER, SERVER_REQUEST, SERVER_RESPONSE)
    exchange.flags = ExchangeFlag.TLS
    span = span_of(exchange)
    assert span.attributes[URL_SCHEME] == "https"
    assert span.metric_attributes[URL_SCHEME] == "https"


def test_tls_client_url_is_https_with_the_default_port_left_out() -> None:
    request = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\n\r\n"
    exchange = make_exchange(Role.CLIENT, request, peer=SocketAddress("10.0.0.9", 443))
    exchange.flags = ExchangeFlag.TLS | ExchangeFlag.SEEDED
    span = span_of(exchange)
    assert span.attributes[URL_FULL] == "https://example.com/a?b=REDACTED"
    assert span.attributes[SERVER_PORT] == 443


def test_server_without_host_falls_back_to_local_address() -> None:
    request = b"GET /orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301/items HTTP/1.0\r\n\r\n"
    span = span_of(make_exchange(Role.SERVER, request, status_response(204, "No Content")))
    assert span.name == "GET /orders/{id}/items"
    assert span.attributes == {
        HTTP_REQUEST_METHOD: "GET",
        NETWORK_PROTOCOL_VERSION: "1.0",
        HTTP_RESPONSE_STATUS_CODE: 204,
        URL_SCHEME: "http",
        URL_PATH: "/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301/items",
        HTTP_ROUTE: "/orders/{id}/items",
        CLIENT_ADDRESS: "10.0.0.7",
        CLIENT_PORT: 51234,
        HTTP_REQUEST_BODY_SIZE: 0,
        HTTP_RESPONSE_BODY_SIZE: 0,
        SERVER_ADDRESS: "10.0.0.5",
        SERVER_PORT: 8080,
    }
    assert span.traceparent is None
    assert span.metric_attributes == {
        HTTP_REQUEST_METHOD: "GET",
        NETWORK_PROTOCOL_VERSION: "1.0",
        HTTP_ROUTE: "/orders/{id}/items",
        URL_SCHEME: "http",
        HTTP_RESPONSE_STATUS_CODE: 204,
    }


def test_server_host_without_port_takes_the_local_port() -> None:
    request = b"GET / HTTP/1.1\r\nHost: shop.local\r\n\r\n"
    span = span_of(make_exchange(Role.SERVER, request))
    assert (span.attributes[SERVER_ADDRESS], span.attributes[SERVER_PORT]) == ("shop.local", 8080)


def test_server_ipv6_host_header() -> None:
    request = b"GET /x HTTP/1.1\r\nHost: [::1]:9090\r\n\r\n"
    span = span_of(make_exchange(Role.SERVER, request))
    assert (span.attributes[SERVER_ADDRESS], span.attributes[SERVER_PORT]) == ("::1", 9090)


def test_server_without_addresses() -> None:
    request = b"GET /x HTTP/1.0\r\n\r\n"
    span = span_of(make_exchange(Role.SERVER, request, local=None, peer=None))
    for key in (SERVER_ADDRESS, SERVER_PORT, CLIENT_ADDRESS, CLIENT_PORT):
        assert key not in span.attributes
    assert SERVER_PORT not in span.metric_attributes


def test_server_body_sizes_count_bytes_after_the_head() -> None:
    request = b"POST /upload HTTP/1.1\r\nHost: h:80\r\nContent-Length: 100000\r\n\r\n" + b"x" * 40
    head_len = request.index(b"\r\n\r\n") + 4
    response = b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated"
    exchange = make_exchange(
        Role.SERVER,
        request,
        response,
        request_bytes=head_len + 100_000,  # the body went on past the capture
        response_bytes=len(response),
    )
    span = span_of(exchange)
    assert span.attributes[HTTP_REQUEST_BODY_SIZE] == 100_000
    assert span.attributes[HTTP_RESPONSE_BODY_SIZE] == 7


def test_server_body_sizes_fall_back_to_declared_length_when_head_is_cut() -> None:
    request = b"PUT /items/7 HTTP/1.1\r\nHost: h\r\nContent-Length: 321\r\nX-Long: aaaa"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 654\r\nX-Pad: bbb"
    exchange = make_exchange(
        Role.SERVER, request, response, request_bytes=5000, response_bytes=6000
    )
    span = span_of(exchange)
    assert span.attributes[HTTP_REQUEST_BODY_SIZE] == 321
    assert span.attributes[HTTP_RESPONSE_BODY_SIZE] == 654
    assert span.name == "PUT /items/{id}"


def test_server_body_sizes_absent_when_unknown() -> None:
    request = b"POST /stream HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Cut: a"
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Cut: b"
    span = span_of(make_exchange(Role.SERVER, request, response, request_bytes=9000))
    assert HTTP_REQUEST_BODY_SIZE not in span.attributes
    assert HTTP_RESPONSE_BODY_SIZE not in span.attributes


@pytest.mark.parametrize(
    ("status", "is_error"),
    [(200, False), (302, False), (404, False), (499, False), (500, True), (503, True), (599, True)],
)
def test_server_is_error_only_for_5xx(status: int, is_error: bool) -> None:
    span = span_of(make_exchange(Role.SERVER, SERVER_REQUEST, status_response(status)))
    assert span.is_error is is_error
    assert span.attributes[HTTP_RESPONSE_STATUS_CODE] == status
    assert span.metric_attributes[HTTP_RESPONSE_STATUS_CODE] == status


def test_unparseable_response_gives_no_status_and_no_error() -> None:
    for role in (Role.SERVER, Role.CLIENT):
        span = span_of(make_exchange(role, SERVER_REQUEST, b"\x00\x01garbage"))
        assert span.is_error is False
        assert HTTP_RESPONSE_STATUS_CODE not in span.attributes
        assert HTTP_RESPONSE_STATUS_CODE not in span.metric_attributes
        assert HTTP_RESPONSE_BODY_SIZE not in span.attributes


def test_unknown_method_is_other() -> None:
    request = b"PROPFIND /dav/files/12 HTTP/1.1\r\nHost: dav.local:8080\r\n\r\n"
    span = span_of(make_exchange(Role.SERVER, request, status_response(207, "Multi-Status")))
    assert span.name == "HTTP /dav/files/{id}"
    assert span.attributes[HTTP_REQUEST_METHOD] == "_OTHER"
    assert span.attributes[HTTP_REQUEST_METHOD_ORIGINAL] == "PROPFIND"
    assert span.metric_attributes[HTTP_REQUEST_METHOD] == "_OTHER"
    assert HTTP_REQUEST_METHOD_ORIGINAL not in span.metric_attributes


def test_known_method_has_no_original() -> None:
    span = span_of(make_exchange(Role.SERVER, SERVER_REQUEST))
    assert HTTP_REQUEST_METHOD_ORIGINAL not in span.attributes


def test_end_before_start_is_clamped() -> None:
    span = span_of(make_exchange(Role.SERVER, SERVER_REQUEST, start_ns=T0, end_ns=T0 - 5))
    assert (span.start_ns, span.end_ns) == (T0, T0)


# ---------------------------------------------------------------- client spans

CLIENT_REQUEST = (
    b"GET /search?q=shoes&api_key=abc HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"User-Agent: python-requests/2.32\r\n"
    b"traceparent: " + TP.encode() + b"\r\n"
    b"\r\n"
)


def test_client_span_exact() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    span = span_of(make_exchange(Role.CLIENT, CLIENT_REQUEST, response))
    assert span == SpanRecord(
        name="GET /search",
        kind=SpanKind.CLIENT,
        start_ns=T0,
        end_ns=T0 + 2_500_000,
        attributes={
            HTTP_REQUEST_METHOD: "GET",
            NETWORK_PROTOCOL_VERSION: "1.1",
            HTTP_RESPONSE_STATUS_CODE: 200,
            URL_FULL: "http://example.com/search?q=REDACTED&api_key=REDACTED",
            SERVER_ADDRESS: "example.com",
            SERVER_PORT: 80,
        },
        is_error=False,
        traceparent=TP,
        metric_attributes={
            HTTP_REQUEST_METHOD: "GET",
            NETWORK_PROTOCOL_VERSION: "1.1",
            HTTP_RESPONSE_STATUS_CODE: 200,
            SERVER_PORT: 80,
            SERVER_ADDRESS: "example.com",
        },
    )


def test_client_query_values_kept_when_asked() -> None:
    span = span_of(make_exchange(Role.CLIENT, CLIENT_REQUEST), SpanOptions(keep_query_values=True))
    assert span.attributes[URL_FULL] == "http://example.com/search?q=shoes&api_key=abc"


def test_client_non_default_port_in_url() -> None:
    request = b"DELETE /carts/9f86d081884c7d659a2feaa0c55ad015 HTTP/1.1\r\nHost: cart:8081\r\n\r\n"
    exchange = make_exchange(Role.CLIENT, request, peer=SocketAddress("10.1.2.3", 8081))
    span = span_of(exchange)
    assert span.name == "DELETE /carts/{id}"
    assert span.attributes[URL_FULL] == "http://cart:8081/carts/9f86d081884c7d659a2feaa0c55ad015"
    assert (span.attributes[SERVER_ADDRESS], span.attributes[SERVER_PORT]) == ("cart", 8081)


def test_client_without_host_uses_the_peer() -> None:
    request = b"GET /health HTTP/1.0\r\n\r\n"
    span = span_of(make_exchange(Role.CLIENT, request, peer=SocketAddress("10.1.2.3", 9000)))
    assert span.attributes[URL_FULL] == "http://10.1.2.3:9000/health"
    assert span.attributes[SERVER_ADDRESS] == "10.1.2.3"
    assert span.attributes[SERVER_PORT] == 9000
    assert span.metric_attributes[SERVER_ADDRESS] == "10.1.2.3"


def test_client_ipv6_peer_is_bracketed_in_url() -> None:
    request = b"GET /x HTTP/1.0\r\n\r\n"
    span = span_of(make_exchange(Role.CLIENT, request, peer=SocketAddress("fd00::1", 8443)))
    assert span.attributes[URL_FULL] == "http://[fd00::1]:8443/x"
    assert span.attributes[SERVER_ADDRESS] == "fd00::1"


def test_client_has_no_server_only_attributes() -> None:
    span = span_of(make_exchange(Role.CLIENT, CLIENT_REQUEST))
    for key in (URL_PATH, URL_QUERY, URL_SCHEME, HTTP_ROUTE, CLIENT_ADDRESS, CLIENT_PORT):
        assert key not in span.attributes
    assert HTTP_ROUTE not in span.metric_attributes
    assert URL_SCHEME not in span.metric_attributes


@pytest.mark.parametrize(
    ("status", "is_error"),
    [(200, False), (304, False), (399, False), (400, True), (404, True), (500, True)],
)
def test_client_is_error_for_4xx_and_5xx(status: int, is_error: bool) -> None:
    span = span_of(make_exchange(Role.CLIENT, CLIENT_REQUEST, status_response(status)))
    assert span.is_error is is_error


def test_client_through_forward_proxy_keeps_the_requested_port() -> None:
    request = b"GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"
    proxy = SocketAddress("10.9.9.9", 3128)
    span = span_of(make_exchange(Role.CLIENT, request, peer=proxy))
    assert span.attributes[URL_FULL] == "http://example.com:8080/p?q=REDACTED"
    assert span.attributes[SERVER_PORT] == 8080


# ---------------------------------------------------------------- classification


def test_tls_request_is_tls() -> None:
    client_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32)
    exchange = make_exchange(Role.CLIENT, client_hello, b"\x16\x03\x03\x00\x7a\x02\x00")
    assert classify(exchange) is Protocol.TLS
    assert exchange.protocol is Protocol.TLS
    assert exchange.http_request is None and exchange.http_response is None


def test_tls_seen_only_in_the_response_is_tls() -> None:
    exchange = make_exchange(Role.SERVER, b"\x80\x01binary", b"\x17\x03\x03\x00\x20" + bytes(32))
    assert classify(exchange) is Protocol.TLS


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\x00\x01\x02\x03garbage",
        b"EHLO mail.example.com\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /x HTTP/2.0\r\n\r\n",
        b"\x16\x05\x00",  # a TLS-looking type byte with an impossible version
    ],
    ids=["empty", "binary", "smtp", "h2-preface", "http2-version", "bad-tls-version"],
)
def test_garbage_is_unknown(head: bytes) -> None:
    exchange = make_exchange(Role.SERVER, head, b"\x00\x00")
    assert classify(exchange) is Protocol.UNKNOWN
    assert exchange.protocol is Protocol.UNKNOWN
    assert exchange.http_request is None


def test_http_classification_attaches_parsed_heads() -> None:
    exchange = make_exchange(Role.SERVER, SERVER_REQUEST, SERVER_RESPONSE)
    assert classify(exchange) is Protocol.HTTP1
    assert exchange.http_request is not None
    assert exchange.http_request.target == "/users/42?token=s3cret&page=2"
    assert exchange.http_response is not None
    assert exchange.http_response.status_code == 200


def test_a_host_port_that_only_looks_numeric_is_no_port() -> None:
    # '²' passes str.isdigit() but int() rejects it: the span must still be built
    assert split_host("h:\u00b2") == ("h:\u00b2", None)
    assert split_host("[::1]:\u00b2") == ("::1", None)
    assert split_host("h:8080") == ("h", 8080)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com:", ("example.com", None)),  # an empty port (RFC 3986 3.2.3)
        ("[::1]:", ("::1", None)),
        (":", (None, None)),
        ("[fe80::1%25eth0]:8080", ("fe80::1%eth0", 8080)),  # the zone id unescaped (RFC 6874)
        ("[fe80::1%eth0]", ("fe80::1%eth0", None)),  # sent unescaped: taken as it is
        ("[fe80::1%2525]:80", ("fe80::1%25", 80)),  # the zone "25"
        ("::1", ("::1", None)),  # no brackets: no port to tell from the address
        ("2001:db8::1:80", ("2001:db8::1:80", None)),
    ],
)
def test_split_host_odd_forms(host: str, expected: tuple[str | None, int | None]) -> None:
    assert split_host(host) == expected


def test_a_host_port_beyond_tcp_ports_is_no_port() -> None:
    # 20 digits would not fit an OTLP int attribute: protobuf refused the whole export for it
    assert split_host("h:99999999999999999999") == ("h:99999999999999999999", None)
    assert split_host("[::1]:65536") == ("::1", None)
    assert split_host("h:000080") == ("h:000080", None)
    assert split_host("h:65535") == ("h", 65535)


# ---------------------------------------------------------------- the memo of repeated spans


def memo_exchange(**overrides: object) -> Exchange:
    exchange = make_exchange(Role.SERVER, SERVER_REQUEST, SERVER_RESPONSE, **overrides)
    assert classify(exchange) is Protocol.HTTP1
    return exchange


def test_memo_gives_what_http_span_gives_with_each_exchanges_times() -> None:
    memo = HttpSpanMemo(SpanOptions())
    variants = [
        {},
        {"start_ns": T0 + 10, "end_ns": T0 + 20},  # a repeat: times of its own
        {"peer": SocketAddress("10.0.0.8", 40000)},  # another client
        {"request_bytes": len(SERVER_REQUEST) + 7},  # a body: its own size
        {"response_bytes": len(SERVER_RESPONSE) + 100},
        {"end_ns": T0 - 5},  # a clock step backwards: no negative duration
        {"local": None},
        {"peer": None},
    ]
    for overrides in variants * 2:
        exchange = memo_exchange(**overrides)
        assert memo.describe(exchange) == http_span(exchange, SpanOptions()), overrides


def test_memo_shares_a_repeat_description_and_keeps_distinct_ones_apart() -> None:
    memo = HttpSpanMemo(SpanOptions())
    first = memo.describe(memo_exchange())
    again = memo.describe(memo_exchange(start_ns=T0 + 1_000, end_ns=T0 + 9_000))
    assert again.attributes is first.attributes
    assert again.metric_attributes is first.metric_attributes
    assert (again.start_ns, again.end_ns) == (T0 + 1_000, T0 + 9_000)
    other_client = memo.describe(memo_exchange(peer=SocketAddress("10.0.0.9", 1)))
    assert other_client.attributes is not first.attributes
    assert other_client.attributes[CLIENT_ADDRESS] == "10.0.0.9"
    failed = make_exchange(Role.SERVER, SERVER_REQUEST, status_response(503))
    assert classify(failed) is Protocol.HTTP1
    error = memo.describe(failed)  # another response head: another description
    assert error.is_error and error.attributes[HTTP_RESPONSE_STATUS_CODE] == 503
    assert len(memo) == 3


def test_memo_starts_over_when_full() -> None:
    memo = HttpSpanMemo(SpanOptions(), capacity=2)
    for port in range(5):
        exchange = memo_exchange(peer=SocketAddress("10.0.0.7", 50000 + port))
        assert memo.describe(exchange).attributes[CLIENT_PORT] == 50000 + port
        assert len(memo) <= 2


def test_memo_keeps_role_and_tls_apart() -> None:
    """The same heads and addresses, served and called, in clear and over TLS: four
    descriptions (url.scheme and the span kind differ), each what http_span makes."""
    memo = HttpSpanMemo(SpanOptions())
    described = []
    for role in (Role.SERVER, Role.CLIENT):
        for flags in (ExchangeFlag(0), ExchangeFlag.TLS):
            exchange = dataclasses.replace(
                make_exchange(role, SERVER_REQUEST, SERVER_RESPONSE, local=None, peer=None),
                flags=flags,
            )
            assert classify(exchange) is Protocol.HTTP1
            for _ in range(2):
                span = memo.describe(exchange)
                assert span == http_span(exchange, SpanOptions())
            described.append(span)
    assert len(memo) == 4
    assert [s.kind for s in described] == [SpanKind.SERVER] * 2 + [SpanKind.CLIENT] * 2
    assert [s.attributes.get(URL_SCHEME) for s in described[:2]] == ["http", "https"]
    assert described[2].attributes[URL_FULL].startswith("http://")
    assert described[3].attributes[URL_FULL].startswith("https://")


def test_a_session_in_the_path_is_redacted_and_left_out_of_the_route() -> None:
    request = b"GET /cart;jsessionid=0A1B2C3D4E5F6A7B/items HTTP/1.1\r\nHost: shop\r\n\r\n"
    exchange = make_exchange(Role.SERVER, request, SERVER_RESPONSE)
    classify(exchange)
    span = http_span(exchange, SpanOptions())
    assert span.attributes[URL_PATH] == "/cart;jsessionid=REDACTED/items"
    assert span.attributes[HTTP_ROUTE] == "/cart/items"
    assert span.name == "GET /cart/items"
    kept = http_span(exchange, SpanOptions(keep_query_values=True))
    assert kept.attributes[URL_PATH] == "/cart;jsessionid=0A1B2C3D4E5F6A7B/items"


# ---------------------------------------------------------------- interim responses


def test_100_continue_then_500_is_a_500_server_error() -> None:
    request = (
        b"POST /upload HTTP/1.1\r\nHost: a.example\r\nExpect: 100-continue\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    )
    response = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror"
    )
    span = span_of(make_exchange(Role.SERVER, request, response))
    assert span.is_error is True
    assert span.attributes == {
        HTTP_REQUEST_METHOD: "POST",
        NETWORK_PROTOCOL_VERSION: "1.1",
        HTTP_RESPONSE_STATUS_CODE: 500,
        URL_SCHEME: "http",
        URL_PATH: "/upload",
        HTTP_ROUTE: "/upload",
        CLIENT_ADDRESS: "10.0.0.7",
        CLIENT_PORT: 51234,
        HTTP_REQUEST_BODY_SIZE: 3,
        HTTP_RESPONSE_BODY_SIZE: 5,
        ERROR_TYPE: "500",
        SERVER_ADDRESS: "a.example",
        SERVER_PORT: 8080,
    }
    assert span.metric_attributes == {
        HTTP_REQUEST_METHOD: "POST",
        NETWORK_PROTOCOL_VERSION: "1.1",
        HTTP_ROUTE: "/upload",
        URL_SCHEME: "http",
        HTTP_RESPONSE_STATUS_CODE: 500,
        ERROR_TYPE: "500",
    }


def test_103_early_hints_then_404_is_a_404_client_error() -> None:
    response = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    )
    request = b"GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n"
    span = span_of(make_exchange(Role.CLIENT, request, response))
    assert span.is_error is True
    assert span.attributes[HTTP_RESPONSE_STATUS_CODE] == 404
    assert span.attributes[ERROR_TYPE] == "404"
    assert span.metric_attributes[HTTP_RESPONSE_STATUS_CODE] == 404


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",  # the final response came after the capture
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 20",  # its status line cut
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>",  # the interim head itself cut
    ],
    ids=["interim-only", "final-cut", "interim-cut"],
)
def test_an_interim_response_alone_gives_no_status(response: bytes) -> None:
    for role in (Role.SERVER, Role.CLIENT):
        span = span_of(make_exchange(role, SERVER_REQUEST, response, response_bytes=5000))
        assert span.is_error is False
        assert HTTP_RESPONSE_STATUS_CODE not in span.attributes
        assert HTTP_RESPONSE_STATUS_CODE not in span.metric_attributes
        assert HTTP_RESPONSE_BODY_SIZE not in span.attributes
        assert ERROR_TYPE not in span.attributes


def test_an_interim_status_handed_in_is_no_status() -> None:
    # HTTP/2 feeds ResponseHeads of its own: a 1xx one is not the answer either
    exchange = make_exchange(Role.SERVER, SERVER_REQUEST, SERVER_RESPONSE)
    classify(exchange)
    exchange.http_response = ResponseHead("2", 103, "", None, None, True)
    span = http_span(exchange, SpanOptions())
    assert HTTP_RESPONSE_STATUS_CODE not in span.attributes
    assert HTTP_RESPONSE_BODY_SIZE not in span.attributes


def test_101_switching_protocols_is_final_and_has_no_body() -> None:
    request = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"
    span = span_of(make_exchange(Role.SERVER, request, response, response_bytes=9000))
    assert span.attributes[HTTP_RESPONSE_STATUS_CODE] == 101
    assert span.attributes[HTTP_RESPONSE_BODY_SIZE] == 0  # websocket frames, not a body
    assert span.is_error is False


# ---------------------------------------------------------------- message body length


@pytest.mark.parametrize(
    ("method", "status"),
    [("HEAD", 200), ("HEAD", 404), ("GET", 204), ("GET", 304), ("CONNECT", 200)],
)
def test_no_response_body_for_head_204_304_and_a_tunnel(method: str, status: int) -> None:
    """RFC 9112 6.3 rules 1 and 2, whatever Content-Length says, whether the head ended
    in the capture (what follows is the next response, or tunnelled bytes) or not."""
    request = f"{method} /big.iso HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Length: 1048576\r\n".encode()
    cut = head + b"X-Pad: " + b"x" * 600  # cut by the capture: the declared length unused
    whole = head + b"\r\n" + b"HTTP/1.1 200 OK\r\n\r\n"  # then another response's bytes
    for response in (cut, whole):
        exchange = make_exchange(Role.SERVER, request, response, response_bytes=len(head) + 700)
        assert span_of(exchange).attributes[HTTP_RESPONSE_BODY_SIZE] == 0


def test_a_200_to_get_still_counts_its_body() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nX-Pad: xx"
    request = b"GET /big.iso HTTP/1.1\r\nHost: a\r\n\r\n"
    exchange = make_exchange(Role.SERVER, request, response, response_bytes=2_000_000)
    assert span_of(exchange).attributes[HTTP_RESPONSE_BODY_SIZE] == 1048576


def test_transfer_encoding_overrides_content_length() -> None:
    """RFC 9112 6.3 rule 3: with both, Content-Length is not the length; with the head cut
    by the capture, the body size is unknown."""
    request = (
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\n"
        b"X-Pad: cut"
    )
    response = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 999999\r\nX-Pad: cut"
    )
    exchange = make_exchange(
        Role.SERVER, request, response, request_bytes=5000, response_bytes=7000
    )
    span = span_of(exchange)
    assert HTTP_REQUEST_BODY_SIZE not in span.attributes
    assert HTTP_RESPONSE_BODY_SIZE not in span.attributes


# ---------------------------------------------------------------- Host and the target's authority


def test_host_with_an_empty_port() -> None:
    request = b"GET /p HTTP/1.1\r\nHost: example.com:\r\n\r\n"
    client = span_of(make_exchange(Role.CLIENT, request))
    assert client.attributes[URL_FULL] == "http://example.com/p"
    assert (client.attributes[SERVER_ADDRESS], client.attributes[SERVER_PORT]) == (
        "example.com",
        80,
    )
    server = span_of(make_exchange(Role.SERVER, request))
    assert (server.attributes[SERVER_ADDRESS], server.attributes[SERVER_PORT]) == (
        "example.com",
        8080,
    )


def test_host_with_an_ipv6_zone_id() -> None:
    request = b"GET /p HTTP/1.1\r\nHost: [fe80::1%25eth0]:8080\r\n\r\n"
    span = span_of(make_exchange(Role.CLIENT, request))
    assert span.attributes[URL_FULL] == "http://[fe80::1%25eth0]:8080/p"
    assert span.attributes[SERVER_ADDRESS] == "fe80::1%eth0"
    assert span.attributes[SERVER_PORT] == 8080
    assert span.metric_attributes[SERVER_ADDRESS] == "fe80::1%eth0"


def test_absolute_form_authority_wins_over_host_on_a_server() -> None:
    request = b"GET http://api.example.com:8081/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n"
    span = span_of(make_exchange(Role.SERVER, request))
    assert span.attributes[SERVER_ADDRESS] == "api.example.com"
    assert span.attributes[SERVER_PORT] == 8081
    assert span.attributes[URL_PATH] == "/p"
    assert span.attributes[URL_QUERY] == "q=REDACTED"
    without_port = b"GET http://api.example.com/p HTTP/1.1\r\nHost: other:9\r\n\r\n"
    span = span_of(make_exchange(Role.SERVER, without_port))
    assert (span.attributes[SERVER_ADDRESS], span.attributes[SERVER_PORT]) == (
        "api.example.com",
        8080,  # the port the request came in on, as with a Host without one
    )


def test_absolute_form_through_a_proxy_without_host() -> None:
    request = b"GET http://example.com:8080/p?q=1 HTTP/1.0\r\n\r\n"
    proxy = SocketAddress("10.9.9.9", 3128)
    span = span_of(make_exchange(Role.CLIENT, request, peer=proxy))
    assert span.attributes[URL_FULL] == "http://example.com:8080/p?q=REDACTED"
    assert (span.attributes[SERVER_ADDRESS], span.attributes[SERVER_PORT]) == (
        "example.com",
        8080,
    )
    assert span.metric_attributes[SERVER_ADDRESS] == "example.com"
    assert span.metric_attributes[SERVER_PORT] == 8080


def test_absolute_form_drops_userinfo_and_keeps_its_scheme() -> None:
    request = b"GET HTTPS://user:pw@[::1]/a HTTP/1.1\r\nHost: wrong:1\r\n\r\n"
    span = span_of(make_exchange(Role.CLIENT, request, peer=SocketAddress("10.9.9.9", 3128)))
    assert span.attributes[URL_FULL] == "https://[::1]/a"
    assert (span.attributes[SERVER_ADDRESS], span.attributes[SERVER_PORT]) == ("::1", 443)
    odd_scheme = b"GET foo://example.com/a HTTP/1.1\r\n\r\n"  # not a metric value
    server = span_of(make_exchange(Role.SERVER, odd_scheme))
    assert server.attributes[URL_SCHEME] == "http"
    assert server.attributes[SERVER_ADDRESS] == "example.com"


# ---------------------------------------------------------------- the server metric


def test_server_port_is_on_the_client_metric_only() -> None:
    """Stable HTTP conventions: server.port is Opt-In on http.server.request.duration,
    Required on http.client.request.duration. The server span keeps it."""
    server = span_of(make_exchange(Role.SERVER, SERVER_REQUEST, SERVER_RESPONSE))
    assert server.attributes[SERVER_PORT] == 8443
    assert SERVER_PORT not in server.metric_attributes
    assert SERVER_ADDRESS not in server.metric_attributes
    client = span_of(make_exchange(Role.CLIENT, CLIENT_REQUEST))
    assert client.metric_attributes[SERVER_PORT] == 80
    assert client.metric_attributes[SERVER_ADDRESS] == "example.com"
