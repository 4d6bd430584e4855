"""The HTTP/1 parsers against the straightforward line-by-line parser they replaced.

The parsers take a fast path for well-formed start lines and find header fields by
searching the header block; the reference below walks the head line by line. Both must
agree on every input: same fields, same reasons.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from otelbpf.protocols.http1 import (
    RequestHead,
    ResponseHead,
    Unparseable,
    parse_request,
    parse_response,
)

# ---------------------------------------------------------------- the reference parser
# otelbpf/protocols/http1.py as it was at commit ae07859, before the fast paths; with one
# fix since: interim (1xx but 101) responses are skipped for the final one after them.

MAX_METHOD_LEN = 20
MAX_HEADER_LINES = 100
# Longer Content-Length values are treated as absent: besides being absurd, int() of a
# string of more than 4300 digits raises ValueError on Python >= 3.11.
_MAX_CONTENT_LENGTH_DIGITS = 18  # 19 until a 19-digit value was found to break OTLP export

# RFC 9110 tchar.
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Bytes allowed in a request-target here: anything but controls, space and DEL (obs-text,
# i.e. raw UTF-8 sent by sloppy clients, is tolerated).
_TARGET_BYTES = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))
_DIGITS = b"0123456789"

_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}
_TLS_PREFIXES = (b"\x16\x03", b"\x17\x03")
_H2_PREFACE_START = b"PRI * HTTP/2"
_STATUS_PREFIX = b"HTTP/"

# Methods looks_like_request() recognises: RFC 9110, PATCH (RFC 5789) and WebDAV/CalDAV.
KNOWN_METHODS = frozenset(
    {
        b"GET",
        b"HEAD",
        b"POST",
        b"PUT",
        b"DELETE",
        b"CONNECT",
        b"OPTIONS",
        b"TRACE",
        b"PATCH",
        b"PROPFIND",
        b"PROPPATCH",
        b"MKCOL",
        b"COPY",
        b"MOVE",
        b"LOCK",
        b"UNLOCK",
        b"REPORT",
        b"SEARCH",
        b"MKCALENDAR",
    }
)
_KNOWN_METHOD_MAX_LEN = max(len(m) for m in KNOWN_METHODS)

# Header fields that are extracted, by lower-cased name -> slot in the values list.
_HOST, _USER_AGENT, _CONTENT_LENGTH, _TRANSFER_ENCODING, _TRACEPARENT, _TRACESTATE = range(6)
_REQUEST_FIELDS = {
    b"host": _HOST,
    b"user-agent": _USER_AGENT,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"traceparent": _TRACEPARENT,
    b"tracestate": _TRACESTATE,  # since: kept only beside a traceparent
}
_RESPONSE_FIELDS = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
}

_EMPTY = Unparseable("empty")
_TLS = Unparseable("tls")
_NOT_HTTP = Unparseable("not-http")
_NOT_HTTP1 = Unparseable("not-http1")
_TRUNCATED = Unparseable("truncated")
_BAD_REQUEST_LINE = Unparseable("bad-request-line")
_BAD_STATUS_LINE = Unparseable("bad-status-line")


def reference_request(data: bytes) -> RequestHead | Unparseable:
    """Parse the head of an HTTP/1.0 or 1.1 request from a (possibly truncated) capture."""
    start = _skip_leading_blank_lines(data)
    if start >= len(data):
        return _EMPTY
    if data.startswith(_TLS_PREFIXES, start):
        return _TLS
    if data.startswith(_H2_PREFACE_START, start):
        return _NOT_HTTP1

    # Method: 1..20 tchars, then a space.
    sp = data.find(b" ", start, start + MAX_METHOD_LEN + 1)
    if sp < 0:
        head = data[start : start + MAX_METHOD_LEN + 1]
        if len(head) <= MAX_METHOD_LEN and not head.translate(None, _TCHAR):
            return _TRUNCATED  # a method token cut off by the end of the capture
        return _NOT_HTTP
    method = data[start:sp]
    if not method or method.translate(None, _TCHAR):
        return _NOT_HTTP

    nl = data.find(b"\n", sp)
    if nl < 0:
        return _TRUNCATED
    end = nl - 1 if data[nl - 1] == 0x0D else nl
    target, sp2, version = data[sp + 1 : end].rpartition(b" ")
    if not sp2:
        # "GET /path" with no version: HTTP/0.9 if the method is a real one.
        return _NOT_HTTP1 if method in KNOWN_METHODS and version else _BAD_REQUEST_LINE
    version_str = _VERSIONS.get(version)
    if version_str is None:
        return _NOT_HTTP1 if version.startswith(_STATUS_PREFIX) else _BAD_REQUEST_LINE
    if not target or target.translate(None, _TARGET_BYTES):
        return _BAD_REQUEST_LINE

    values: list[bytes | None] = [None] * 6
    complete = _scan_headers(data, nl + 1, _REQUEST_FIELDS, values)
    host, user_agent, content_length, transfer_encoding, traceparent, tracestate = values
    if traceparent is None:
        tracestate = None
    return RequestHead(
        method=method.decode("latin-1"),
        target=target.decode("latin-1"),
        version=version_str,
        host=None if host is None else host.decode("latin-1"),
        user_agent=None if user_agent is None else user_agent.decode("latin-1"),
        content_length=_content_length(content_length),
        transfer_encoding=(
            None if transfer_encoding is None else transfer_encoding.decode("latin-1").lower()
        ),
        traceparent=None if traceparent is None else traceparent.decode("latin-1"),
        complete=complete,
        tracestate=None if tracestate is None else tracestate.decode("latin-1"),
    )


def reference_response(data: bytes) -> ResponseHead | Unparseable:
    """Parse the head of an HTTP/1.0 or 1.1 response from a (possibly truncated) capture."""
    start = _skip_leading_blank_lines(data)
    if start >= len(data):
        return _EMPTY
    if data.startswith(_TLS_PREFIXES, start):
        return _TLS
    if not data.startswith(_STATUS_PREFIX, start):
        rest = data[start : start + len(_STATUS_PREFIX)]
        # A capture cut inside "HTTP/" itself.
        return _TRUNCATED if _STATUS_PREFIX.startswith(rest) else _NOT_HTTP

    nl = data.find(b"\n", start)
    if nl < 0:
        return _TRUNCATED
    end = nl - 1 if data[nl - 1] == 0x0D else nl
    line = data[start:end]
    version, sp, rest = line.partition(b" ")
    version_str = _VERSIONS.get(version)
    if version_str is None:
        return _NOT_HTTP1 if version.startswith(_STATUS_PREFIX) and sp else _BAD_STATUS_LINE
    code, sp2, reason = rest.partition(b" ")
    if len(code) != 3 or code.translate(None, _DIGITS):
        return _BAD_STATUS_LINE
    status_code = int(code)
    if not 100 <= status_code <= 599:
        return _BAD_STATUS_LINE
    if status_code < 200 and status_code != 101:
        end = _end_of_head(data, nl + 1)
        final = None if end is None else reference_response(data[end:])
        return final if isinstance(final, ResponseHead) else Unparseable("interim")

    values: list[bytes | None] = [None] * 5
    complete = _scan_headers(data, nl + 1, _RESPONSE_FIELDS, values)
    transfer_encoding = values[_TRANSFER_ENCODING]
    return ResponseHead(
        version=version_str,
        status_code=status_code,
        reason=reason.strip(b" \t").decode("latin-1"),
        content_length=_content_length(values[_CONTENT_LENGTH]),
        transfer_encoding=(
            None if transfer_encoding is None else transfer_encoding.decode("latin-1").lower()
        ),
        complete=complete,
    )


def _skip_leading_blank_lines(data: bytes) -> int:
    """Index of the first byte after leading CR/LF (RFC 9112 2.2: ignore empty lines
    before the start line, e.g. a stray CRLF after the previous body)."""
    if data[:1] not in (b"\r", b"\n"):
        return 0
    return len(data) - len(data.lstrip(b"\r\n"))


def _scan_headers(
    data: bytes, pos: int, wanted: dict[bytes, int], values: list[bytes | None]
) -> bool:
    """Fill ``values`` with the first value of each ``wanted`` header, from ``pos`` on.

    Only complete lines (ending in LF) count; a line cut off by the end of the capture is
    ignored. Lines without a colon, obs-fold continuation lines and names with
    whitespace before the colon are skipped. Returns True when the blank line ending the
    head was seen.
    """
    find = data.find
    remaining = len(wanted)
    for _ in range(MAX_HEADER_LINES):
        nl = find(b"\n", pos)
        if nl < 0:
            return False
        end = nl - 1 if nl > pos and data[nl - 1] == 0x0D else nl
        if end == pos:
            return True
        colon = find(b":", pos, end)
        if colon > pos:
            slot = wanted.get(data[pos:colon].lower())
            if slot is not None and values[slot] is None:
                values[slot] = data[colon + 1 : end].strip(b" \t")
                remaining -= 1
                if not remaining:
                    return _blank_line_from(data, nl + 1)
        pos = nl + 1
    return _blank_line_from(data, pos)


def _end_of_head(data: bytes, pos: int) -> int | None:
    """Where the head whose header lines start at ``pos`` ends: after its empty line."""
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return None
        if data[pos:nl] in (b"", b"\r"):
            return nl + 1
        pos = nl + 1


def _blank_line_from(data: bytes, pos: int) -> bool:
    """Is there an empty line at or after ``pos``, which is the start of a line?"""
    # data[pos - 1] is the LF that ended the previous line.
    return data.find(b"\n\n", pos - 1) >= 0 or data.find(b"\n\r\n", pos - 1) >= 0


def _content_length(raw: bytes | None) -> int | None:
    if not raw or len(raw) > _MAX_CONTENT_LENGTH_DIGITS or raw.translate(None, _DIGITS):
        return None
    return int(raw)


# ---------------------------------------------------------------- generated heads

_NEWLINES = st.sampled_from([b"\r\n", b"\n", b"\r\r\n", b"\r"])
_NAMES = st.sampled_from(
    [
        b"Host",
        b"host",
        b"HOST",
        b"User-Agent",
        b"user-agent",
        b"Content-Length",
        b"content-LENGTH",
        b"Transfer-Encoding",
        b"transfer-encoding",
        b"traceparent",
        b"TraceParent",
        b"tracestate",
        b"Accept",
        b"X-Host",
        b"Hostname",
        b" Host",
        b"\tHost",
        b"Host ",
        b"",
    ]
)
_VALUE = st.lists(
    st.sampled_from([b" ", b"\t", b"\r", b"a", b"Z", b"1", b"0", b"9", b":", b",", b"\xe9", b"-"]),
    max_size=8,
).map(b"".join)
_HEADER_LINE = st.one_of(
    st.tuples(_NAMES, st.sampled_from([b":", b" :", b"::", b""]), _VALUE).map(b"".join),
    st.binary(max_size=12),
)
_REQUEST_LINES = st.sampled_from(
    [
        b"GET / HTTP/1.1",
        b"POST /x?a=1 HTTP/1.0",
        b"\r\nGET /p HTTP/1.1",
        b"\n\r\nPURGE /c HTTP/1.1",
        b"get / HTTP/1.1",
        b"GET / HTTP/1.1\r",
        b"GET / HTTP/1.1 ",
        b"GET /a b HTTP/1.1",
        b"GET  HTTP/1.1",
        b"GET / HTTP/1.2",
        b"GET / http/1.1",
        b"GET /index.html",
        b"A" * 20 + b" / HTTP/1.1",
        b"A" * 21 + b" / HTTP/1.1",
        b"GE(T / HTTP/1.1",
        b"PRI * HTTP/2.0",
        b"\x16\x03\x01",
        b"",
    ]
)
_STATUS_LINES = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 100 Continue",
        b"HTTP/1.1 103",
        b"HTTP/1.0 101 Switching Protocols",
        b"HTTP/1.0 503 Busy ",
        b"\r\nHTTP/1.1 204",
        b"HTTP/1.1 200",
        b"HTTP/1.1 200 ",
        b"HTTP/1.1 200 OK\r",
        b"HTTP/1.1 200\r",
        b"HTTP/1.1 404 \t Not \r Found \t",
        b"HTTP/1.1 099 Odd",
        b"HTTP/1.1 600 Odd",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1  200 OK",
        b"HTTP/1.1",
        b"HTTP/2 200",
        b"HTTP/1.1x 200 OK",
        b"HTT",
        b"\x17\x03\x03",
        b"",
    ]
)


def _head(start: bytes, lines: list[bytes], newlines: list[bytes], tail: bytes) -> bytes:
    parts = [start]
    for i, line in enumerate(lines):
        parts.append(newlines[i % len(newlines)])
        parts.append(line)
    return b"".join(parts) + tail


_TAILS = st.sampled_from(
    [
        b"",
        b"\r\n",
        b"\n",
        b"\r\n\r\n",
        b"\n\n",
        b"\r\n\r\nHost: body\r\n",
        # a response after an interim one
        b"\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc",
        b"\n\n\r\nHTTP/1.1 102\n\nHTTP/1.0 500 X\nTransfer-Encoding: chunked\n",
        b"\r\n\r\nHTTP/1.1 200 O",
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    start=_REQUEST_LINES,
    lines=st.lists(_HEADER_LINE, max_size=8),
    newlines=st.lists(_NEWLINES, min_size=1, max_size=4),
    tail=_TAILS,
    cut=st.integers(min_value=0, max_value=200),
)
def test_request_agrees_with_reference(
    start: bytes, lines: list[bytes], newlines: list[bytes], tail: bytes, cut: int
) -> None:
    data = _head(start, lines, newlines, tail)
    for sample in (data, data[:cut]):
        assert parse_request(sample) == reference_request(sample)


@settings(max_examples=500, deadline=None)
@given(
    start=_STATUS_LINES,
    lines=st.lists(_HEADER_LINE, max_size=8),
    newlines=st.lists(_NEWLINES, min_size=1, max_size=4),
    tail=_TAILS,
    cut=st.integers(min_value=0, max_value=200),
)
def test_response_agrees_with_reference(
    start: bytes, lines: list[bytes], newlines: list[bytes], tail: bytes, cut: int
) -> None:
    data = _head(start, lines, newlines, tail)
    for sample in (data, data[:cut]):
        assert parse_response(sample) == reference_response(sample)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_agree_with_reference(data: bytes) -> None:
    assert parse_request(data) == reference_request(data)
    assert parse_response(data) == reference_response(data)


@given(
    before=st.integers(min_value=0, max_value=120),
    after=st.integers(min_value=0, max_value=3),
    short=st.booleans(),
    blank=st.booleans(),
)
def test_header_line_cap_agrees_with_reference(
    before: int, after: int, short: bool, blank: bool
) -> None:
    filler = b"X:\r\n" if short else b"X-Filler: some value\r\n"
    tail = b"\r\n" if blank else b""
    request = b"GET / HTTP/1.1\r\n" + filler * before + b"Host: h\r\n" + filler * after + tail
    response = b"HTTP/1.1 200 OK\r\n" + filler * before + b"Content-Length: 5\r\n" + tail
    assert parse_request(request) == reference_request(request)
    assert parse_response(response) == reference_response(response)
