from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otelbpf.protocols import http1
from otelbpf.protocols.http1 import (
    RequestHead,
    ResponseHead,
    Unparseable,
    looks_like_request,
    parse_request,
    parse_response,
)

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

CURL_REQUEST = (
    b"GET /api/v1/users/42?expand=true HTTP/1.1\r\n"
    b"Host: example.com:8080\r\n"
    b"User-Agent: curl/8.5.0\r\n"
    b"Accept: */*\r\n"
    b"traceparent: " + TP.encode() + b"\r\n"
    b"\r\n"
)
CURL_REQUEST_LINE_END = CURL_REQUEST.index(b"\n") + 1
CURL_HEAD = RequestHead(
    method="GET",
    target="/api/v1/users/42?expand=true",
    version="1.1",
    host="example.com:8080",
    user_agent="curl/8.5.0",
    content_length=None,
    transfer_encoding=None,
    traceparent=TP,
    complete=True,
)

RESPONSE = (
    b"HTTP/1.1 201 Created\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 17\r\n"
    b"\r\n"
    b'{"id": 42, "a": 1}'
)
RESPONSE_LINE_END = RESPONSE.index(b"\n") + 1
RESPONSE_HEAD = ResponseHead(
    version="1.1",
    status_code=201,
    reason="Created",
    content_length=17,
    transfer_encoding=None,
    complete=True,
)


def req(
    method: str = "GET",
    target: str = "/",
    version: str = "1.1",
    host: str | None = None,
    user_agent: str | None = None,
    content_length: int | None = None,
    transfer_encoding: str | None = None,
    traceparent: str | None = None,
    complete: bool = True,
) -> RequestHead:
    return RequestHead(
        method=method,
        target=target,
        version=version,
        host=host,
        user_agent=user_agent,
        content_length=content_length,
        transfer_encoding=transfer_encoding,
        traceparent=traceparent,
        complete=complete,
    )


def resp(
    status_code: int = 200,
    reason: str = "OK",
    version: str = "1.1",
    content_length: int | None = None,
    transfer_encoding: str | None = None,
    complete: bool = True,
) -> ResponseHead:
    return ResponseHead(
        version=version,
        status_code=status_code,
        reason=reason,
        content_length=content_length,
        transfer_encoding=transfer_encoding,
        complete=complete,
    )


REQUEST_CASES: list[tuple[str, bytes, RequestHead | Unparseable]] = [
    ("curl-get", CURL_REQUEST, CURL_HEAD),
    (
        "post-content-length-with-body",
        b"POST /users HTTP/1.1\r\nHost: api.local\r\nContent-Type: application/json\r\n"
        b'Content-Length: 13\r\n\r\n{"name":"x"}\n',
        req("POST", "/users", host="api.local", content_length=13),
    ),
    (
        "post-chunked",
        b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        req("POST", "/upload", host="h", transfer_encoding="chunked"),
    ),
    (
        "transfer-encoding-lowercased",
        b"PUT /x HTTP/1.1\r\nTransfer-Encoding: GZip, Chunked\r\n\r\n",
        req("PUT", "/x", transfer_encoding="gzip, chunked"),
    ),
    ("head", b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n", req("HEAD", "/healthz", host="a")),
    (
        "put",
        b"PUT /items/7 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        req("PUT", "/items/7", host="a", content_length=0),
    ),
    ("delete", b"DELETE /items/7 HTTP/1.1\r\n\r\n", req("DELETE", "/items/7")),
    ("options-asterisk", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", req("OPTIONS", "*", host="a")),
    (
        "patch",
        b"PATCH /items/7 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        req("PATCH", "/items/7", content_length=2),
    ),
    (
        "connect-authority-form",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        req("CONNECT", "example.com:443", host="example.com:443"),
    ),
    (
        "absolute-form",
        b"GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
        req("GET", "http://example.com:8080/p?q=1", host="example.com:8080"),
    ),
    (
        "http-1.0-no-headers",
        b"GET /index.html HTTP/1.0\r\n\r\n",
        req(target="/index.html", version="1.0"),
    ),
    (
        "http-1.0-with-headers",
        b"GET / HTTP/1.0\r\nUser-Agent: Wget/1.21\r\nHost: h\r\n\r\n",
        req(version="1.0", host="h", user_agent="Wget/1.21"),
    ),
    (
        "mixed-case-names",
        b"GET / HTTP/1.1\r\nhOsT: h:81\r\nUSER-AGENT: ua\r\ncontent-LENGTH: 5\r\n"
        b"TraceParent: " + TP.encode() + b"\r\nTRANSFER-encoding: Chunked\r\n\r\n",
        req(
            host="h:81",
            user_agent="ua",
            content_length=5,
            transfer_encoding="chunked",
            traceparent=TP,
        ),
    ),
    (
        "ows-stripped",
        b"GET / HTTP/1.1\r\nHost:\t  h  \t\r\nUser-Agent:ua\r\n\r\n",
        req(host="h", user_agent="ua"),
    ),
    (
        "duplicates-take-first",
        b"GET / HTTP/1.1\r\nHost: first\r\nHost: second\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\n",
        req(host="first", content_length=1),
    ),
    ("empty-host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", req(host="")),
    (
        "bad-content-length-sign",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        req("POST"),
    ),
    (
        "bad-content-length-list",
        b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
        req("POST"),
    ),
    ("bad-content-length-empty", b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", req("POST")),
    (
        "content-length-too-long",
        b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        req("POST"),
    ),
    (
        "bare-lf",
        b"GET /lf HTTP/1.1\nHost: h\nUser-Agent: ua\n\n",
        req(target="/lf", host="h", user_agent="ua"),
    ),
    (
        "leading-crlf-skipped",
        b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
        req(host="h"),
    ),
    (
        "cut-mid-header",
        b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: curl/8.",
        req(host="h", complete=False),
    ),
    ("cut-after-request-line", b"GET / HTTP/1.1\r\n", req(complete=False)),
    ("cut-in-final-crlf", b"GET / HTTP/1.1\r\nHost: h\r\n\r", req(host="h", complete=False)),
    (
        "junk-header-lines-skipped",
        b"GET / HTTP/1.1\r\nno colon here\r\n: empty name\r\nHost : spaced\r\n"
        b" folded: continuation\r\nHost: h\r\n\r\n",
        req(host="h"),
    ),
    ("custom-method-token", b"PURGE /cache HTTP/1.1\r\n\r\n", req("PURGE", "/cache")),
    ("lowercase-method-as-sent", b"get / HTTP/1.1\r\n\r\n", req("get")),
    ("raw-utf8-target", "GET /caf\u00e9 HTTP/1.1\r\n\r\n".encode(), req(target="/caf\u00c3\u00a9")),
    (
        "header-lines-capped",
        b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 150 + b"Host: late\r\n\r\n",
        req(host=None),
    ),
    (
        "header-lines-capped-incomplete",
        b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 150,
        req(complete=False),
    ),
    # Unparseable
    ("empty", b"", Unparseable("empty")),
    ("only-crlf", b"\r\n\r\n", Unparseable("empty")),
    ("tls-handshake", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", Unparseable("tls")),
    ("tls-appdata", b"\x17\x03\x03\x00\x20" + b"\xaa" * 32, Unparseable("tls")),
    ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Unparseable("not-http1")),
    ("h2-preface-cut", b"PRI * HTTP/2", Unparseable("not-http1")),
    ("http-0.9", b"GET /index.html\r\n", Unparseable("not-http1")),
    ("http-2.0-version", b"GET / HTTP/2.0\r\n\r\n", Unparseable("not-http1")),
    ("http-1.2-version", b"GET / HTTP/1.2\r\n\r\n", Unparseable("not-http1")),
    ("garbage-binary", b"\x00\x01\x02\xff\xfe garbage", Unparseable("not-http")),
    ("json-body-mid-stream", b'{"id": 1, "name": "x"}', Unparseable("not-http")),
    ("leading-space", b" GET / HTTP/1.1\r\n\r\n", Unparseable("not-http")),
    ("method-too-long", b"A" * 21 + b" / HTTP/1.1\r\n\r\n", Unparseable("not-http")),
    ("method-bad-char", b"GE(T / HTTP/1.1\r\n\r\n", Unparseable("not-http")),
    ("method-cut", b"OPTIO", Unparseable("truncated")),
    ("request-line-cut", b"GET /api/v1/us", Unparseable("truncated")),
    ("request-line-cut-at-cr", b"GET / HTTP/1.1\r", Unparseable("truncated")),
    ("text-word-no-version", b"hello world\r\n", Unparseable("bad-request-line")),
    ("lowercase-version", b"GET / http/1.1\r\n\r\n", Unparseable("bad-request-line")),
    ("space-in-target", b"GET /a b HTTP/1.1\r\n\r\n", Unparseable("bad-request-line")),
    ("empty-target", b"GET  HTTP/1.1\r\n\r\n", Unparseable("bad-request-line")),
    ("control-in-target", b"GET /a\x01b HTTP/1.1\r\n\r\n", Unparseable("bad-request-line")),
    ("trailing-space", b"GET / HTTP/1.1 \r\n\r\n", Unparseable("bad-request-line")),
    ("method-only-line", b"GET \r\n", Unparseable("bad-request-line")),
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [pytest.param(d, e, id=name) for name, d, e in REQUEST_CASES],
)
def test_parse_request(data: bytes, expected: RequestHead | Unparseable) -> None:
    assert parse_request(data) == expected


RESPONSE_CASES: list[tuple[str, bytes, ResponseHead | Unparseable]] = [
    ("201-with-body", RESPONSE, RESPONSE_HEAD),
    (
        "200",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        resp(200, "OK", content_length=2),
    ),
    (
        "404",
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\n",
        resp(404, "Not Found", content_length=9),
    ),
    (
        "500-chunked",
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        resp(500, "Internal Server Error", transfer_encoding="chunked"),
    ),
    ("204", b"HTTP/1.1 204 No Content\r\n\r\n", resp(204, "No Content")),
    (
        "101",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        resp(101, "Switching Protocols"),
    ),
    ("no-reason", b"HTTP/1.1 200\r\n", resp(200, "", complete=False)),
    ("no-reason-trailing-space", b"HTTP/1.1 200 \r\n\r\n", resp(200, "")),
    ("http-1.0", b"HTTP/1.0 302 Found\r\n\r\n", resp(302, "Found", version="1.0")),
    ("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", resp(content_length=3)),
    (
        "mixed-case-names-duplicates",
        b"HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh: 7\r\nCONTENT-LENGTH: 8\r\n\r\n",
        resp(content_length=7),
    ),
    (
        "cut-mid-header",
        b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Ty",
        resp(content_length=12, complete=False),
    ),
    ("cut-mid-content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 12", resp(complete=False)),
    ("bad-content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n", resp()),
    ("reason-with-spaces", b"HTTP/1.1 418 I'm a teapot\r\n\r\n", resp(418, "I'm a teapot")),
    # Unparseable
    ("empty", b"", Unparseable("empty")),
    ("tls", b"\x16\x03\x03\x00\x5a\x02\x00", Unparseable("tls")),
    ("tls-appdata", b"\x17\x03\x03\x01\x00", Unparseable("tls")),
    ("h2-frames", b"\x00\x00\x12\x04\x00\x00\x00\x00\x00", Unparseable("not-http")),
    ("garbage", b"garbage\r\n\r\n", Unparseable("not-http")),
    ("a-request", b"GET / HTTP/1.1\r\n\r\n", Unparseable("not-http")),
    ("cut-in-prefix", b"HTT", Unparseable("truncated")),
    ("cut-in-status-line", b"HTTP/1.1 200 O", Unparseable("truncated")),
    ("http-2", b"HTTP/2 200\r\n\r\n", Unparseable("not-http1")),
    ("http-0.9-like", b"HTTP/0.9 200 OK\r\n\r\n", Unparseable("not-http1")),
    ("status-too-low", b"HTTP/1.1 099 Odd\r\n\r\n", Unparseable("bad-status-line")),
    ("status-too-high", b"HTTP/1.1 600 Odd\r\n\r\n", Unparseable("bad-status-line")),
    ("status-two-digits", b"HTTP/1.1 20 OK\r\n\r\n", Unparseable("bad-status-line")),
    ("status-four-digits", b"HTTP/1.1 2000 OK\r\n\r\n", Unparseable("bad-status-line")),
    ("status-not-digits", b"HTTP/1.1 2x0 OK\r\n\r\n", Unparseable("bad-status-line")),
    ("status-missing", b"HTTP/1.1\r\n\r\n", Unparseable("bad-status-line")),
    ("double-space", b"HTTP/1.1  200 OK\r\n\r\n", Unparseable("bad-status-line")),
    ("unknown-version", b"HTTP/1.1x 200 OK\r\n\r\n", Unparseable("not-http1")),
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [pytest.param(d, e, id=name) for name, d, e in RESPONSE_CASES],
)
def test_parse_response(data: bytes, expected: ResponseHead | Unparseable) -> None:
    assert parse_response(data) == expected


@pytest.mark.parametrize("cut", range(len(CURL_REQUEST) + 1))
def test_request_truncated_at_every_offset(cut: int) -> None:
    data = CURL_REQUEST[:cut]
    result = parse_request(data)
    if cut == 0:
        assert result == Unparseable("empty")
        return
    if cut < CURL_REQUEST_LINE_END:
        assert result == Unparseable("truncated")
        return
    assert isinstance(result, RequestHead)
    # A header is reported only once its whole line (up to LF) was captured.
    expected = dataclasses.replace(
        CURL_HEAD,
        host=CURL_HEAD.host if b"Host: example.com:8080\r\n" in data else None,
        user_agent=CURL_HEAD.user_agent if b"User-Agent: curl/8.5.0\r\n" in data else None,
        traceparent=CURL_HEAD.traceparent if TP.encode() + b"\r\n" in data else None,
        complete=cut == len(CURL_REQUEST),
    )
    assert result == expected


@pytest.mark.parametrize("cut", range(len(RESPONSE) + 1))
def test_response_truncated_at_every_offset(cut: int) -> None:
    data = RESPONSE[:cut]
    result = parse_response(data)
    if cut == 0:
        assert result == Unparseable("empty")
        return
    if cut < RESPONSE_LINE_END:
        assert result == Unparseable("truncated")
        return
    head_end = RESPONSE.index(b"\r\n\r\n") + 4
    expected = dataclasses.replace(
        RESPONSE_HEAD,
        content_length=17 if b"Content-Length: 17\r\n" in data else None,
        complete=cut >= head_end,
    )
    assert result == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET / HTTP/1.1\r\n", True),
        (b"POST /x", True),
        (b"HEAD ", True),
        (b"PUT ", True),
        (b"DELETE ", True),
        (b"OPTIONS *", True),
        (b"PATCH ", True),
        (b"CONNECT h:443", True),
        (b"TRACE ", True),
        (b"PROPFIND ", True),
        (b"MKCALENDAR ", True),
        (b"GET", False),
        (b"GET/", False),
        (b"get / HTTP/1.1", False),
        (b"PURGE / HTTP/1.1", False),
        (b"PRI * HTTP/2.0", False),
        (b"HTTP/1.1 200 OK", False),
        (b"EHLO mail.example.com", False),
        (b" GET /", False),
        (b"\x16\x03\x01", False),
        (b"", False),
        # blank lines before the request line, which parse_request skips (RFC 9112 2.2)
        (b"\r\nGET / HTTP/1.1\r\n", True),
        (b"\n\r\n\r\nPOST /x", True),
        (b"\r\n", False),
        (b"\r\n\r\nEHLO mail.example.com", False),
        (b"\r\n GET /", False),
        (b"\r\nGET", False),
    ],
)
def test_looks_like_request(data: bytes, expected: bool) -> None:
    assert looks_like_request(data) is expected


def test_results_are_frozen() -> None:
    head = parse_request(CURL_REQUEST)
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.method = "POST"  # type: ignore[misc]
    assert not hasattr(head, "__dict__")


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    req_result = parse_request(data)
    resp_result = parse_response(data)
    assert isinstance(req_result, RequestHead | Unparseable)
    assert isinstance(resp_result, ResponseHead | Unparseable)
    assert isinstance(looks_like_request(data), bool)


@given(st.binary(max_size=512))
def test_bytes_after_valid_start_line_never_raise(tail: bytes) -> None:
    request = parse_request(b"POST /x HTTP/1.1\r\n" + tail)
    assert isinstance(request, RequestHead)
    assert (request.method, request.target, request.version) == ("POST", "/x", "1.1")
    response = parse_response(b"HTTP/1.0 503 Busy\r\n" + tail)
    assert isinstance(response, ResponseHead)
    assert (response.version, response.status_code, response.reason) == ("1.0", 503, "Busy")


_TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


@given(
    method=st.text(_TCHARS, min_size=1, max_size=20),
    target=st.text(_VALUE_CHARS, min_size=1, max_size=60),
    version=st.sampled_from(["1.0", "1.1"]),
    host=st.none() | st.text(_VALUE_CHARS, max_size=30),
    traceparent=st.none() | st.text(_VALUE_CHARS, min_size=1, max_size=60),
    content_length=st.none() | st.integers(min_value=0, max_value=10**15),
    newline=st.sampled_from([b"\r\n", b"\n"]),
    cut=st.integers(min_value=0, max_value=400),
)
def test_generated_requests_round_trip_and_prefixes_agree(
    method: str,
    target: str,
    version: str,
    host: str | None,
    traceparent: str | None,
    content_length: int | None,
    newline: bytes,
    cut: int,
) -> None:
    lines = [f"{method} {target} HTTP/{version}".encode()]
    lines.append(b"Accept: */*")
    if host is not None:
        lines.append(b"Host: " + host.encode())
    if traceparent is not None:
        lines.append(b"traceparent: " + traceparent.encode())
    if content_length is not None:
        lines.append(b"Content-Length: " + str(content_length).encode())
    data = newline.join(lines) + newline + newline
    full = parse_request(data)
    assert full == req(
        method,
        target,
        version,
        host=host,
        traceparent=traceparent,
        content_length=content_length,
    )
    # Any prefix gives either nothing or a subset of the full answer, never a wrong value.
    part = parse_request(data[:cut])
    if isinstance(part, Unparseable):
        assert part.reason in {"empty", "truncated"}
        return
    assert (part.method, part.target, part.version) == (method, target, version)
    for field in ("host", "user_agent", "content_length", "transfer_encoding", "traceparent"):
        value = getattr(part, field)
        assert value is None or value == getattr(full, field)
    assert part.complete is (cut >= len(data))


@pytest.mark.parametrize(
    ("data", "head_size"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\nbody", 27),
        (b"GET / HTTP/1.1\r\n\r\n", 18),
        (b"GET / HTTP/1.1\nHost: h\n\nbody", 24),  # bare LFs
        (b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 29),  # a stray CRLF first
        (b"GET / HTTP/1.1\r\nHost: h\r\n", None),  # the capture ended in the head
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r", None),
    ],
)
def test_request_head_size_is_where_the_body_starts(data: bytes, head_size: int | None) -> None:
    parsed = parse_request(data)
    assert isinstance(parsed, RequestHead)
    assert (parsed.head_size, parsed.complete) == (head_size, head_size is not None)


@pytest.mark.parametrize(
    ("data", "head_size"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 38),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 27),
        (b"HTTP/1.0 200 OK\n\nok", 17),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", None),
    ],
)
def test_response_head_size_is_where_the_body_starts(data: bytes, head_size: int | None) -> None:
    parsed = parse_response(data)
    assert isinstance(parsed, ResponseHead)
    assert (parsed.head_size, parsed.complete) == (head_size, head_size is not None)
    if head_size is not None:
        assert data[head_size:] == data.partition(b"\n\r\n" if b"\r" in data else b"\n\n")[2]


def test_a_content_length_beyond_64_bits_is_absent() -> None:
    # protobuf refuses an int attribute of more than 64 bits, and with it the whole export:
    # a client could send this to lose every span batched with its request's
    huge, big = b"9300000000000000000", b"930000000000000000"
    request = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: %s\r\n\r\n"
    assert parse_request(request % huge).content_length is None
    assert parse_request(request % big).content_length == 930_000_000_000_000_000
    assert parse_response(response % huge).content_length is None
    assert parse_response(response % big).content_length == 930_000_000_000_000_000


def test_tracestate_comes_with_its_traceparent_only() -> None:
    with_parent = CURL_REQUEST.replace(b"\r\n\r\n", b"\r\ntracestate: vendor=a, other=b\r\n\r\n")
    parsed = parse_request(with_parent)
    assert parsed.traceparent == TP and parsed.tracestate == "vendor=a, other=b"
    alone = b"GET / HTTP/1.1\r\nHost: a\r\ntracestate: vendor=a\r\n\r\n"
    assert parse_request(alone).tracestate is None  # nothing to continue
    assert parse_request(CURL_REQUEST).tracestate is None


# ---------------------------------------------------------------- interim (1xx) responses


INTERIM_CASES = [
    pytest.param(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror",
        resp(500, "Internal Server Error", content_length=5),
        b"error",
        id="100-then-500",
    ),
    pytest.param(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        resp(404, "Not Found", content_length=0),
        b"",
        id="103-then-404",
    ),
    pytest.param(
        b"HTTP/1.1 100 Continue\n\nHTTP/1.1 102 Processing\r\n\r\n"
        b"\r\nHTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        resp(200, "OK", version="1.0", transfer_encoding="chunked"),
        b"0\r\n\r\n",
        id="two-interim-then-200",
    ),
    pytest.param(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Cut: a",
        resp(200, "OK", content_length=7, complete=False),
        None,
        id="final-head-cut",
    ),
    pytest.param(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        resp(101, "Switching Protocols"),
        b"HTTP/1.1 200 OK\r\n\r\n",
        id="101-is-final",
    ),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n", Unparseable("interim"), None, id="alone"),
    pytest.param(b"HTTP/1.1 100 Continue\r\n", Unparseable("interim"), None, id="cut"),
    pytest.param(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2",
        Unparseable("interim"),
        None,
        id="final-line-cut",
    ),
    pytest.param(
        b"HTTP/1.1 199 Odd\r\n\r\n\x00garbage",
        Unparseable("interim"),
        None,
        id="garbage-after",
    ),
]


@pytest.mark.parametrize(("data", "expected", "body"), INTERIM_CASES)
def test_interim_responses_are_skipped(
    data: bytes, expected: ResponseHead | Unparseable, body: bytes | None
) -> None:
    parsed = parse_response(data)
    assert parsed == expected
    if isinstance(parsed, ResponseHead):
        # head_size counts from the start of the capture: what follows is the final body
        assert (None if parsed.head_size is None else data[parsed.head_size :]) == body


def test_interim_responses_through_the_general_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same answers with the fast path's expression matching nothing."""
    cases = [(p.values[0], p.values[1]) for p in INTERIM_CASES]
    fast = [
        (parse_response(data), getattr(parse_response(data), "head_size", None))
        for data, _ in cases
    ]
    monkeypatch.setattr(http1, "_STATUS_LINE", re.compile(rb"(?!)"))
    general = [
        (parse_response(data), getattr(parse_response(data), "head_size", None))
        for data, _ in cases
    ]
    assert general == fast
    assert [result for result, _ in general] == [expected for _, expected in cases]
