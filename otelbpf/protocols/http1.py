"""Sans-IO parser for HTTP/1.x request and response heads.

Where it sits in the pipe: the kernel side captures the first bytes of the request
and of the response of each exchange -> this module turns those bytes into
``RequestHead`` / ``ResponseHead`` events -> the span builder makes spans from them.

Bytes in, events out: no I/O, no clocks, no OpenTelemetry. The captures are often cut
off mid-header, may start mid-stream or hold TLS or other binary data, so the parsers
never raise; input they cannot use becomes ``Unparseable(reason)``.

Reasons given by ``Unparseable``:

``empty``             no bytes (or only blank lines)
``tls``               a TLS record header (0x16 0x03 / 0x17 0x03)
``not-http``          does not start like an HTTP/1.x request / status line
``not-http1``         HTTP, but not 1.0 or 1.1 (HTTP/0.9, HTTP/2 preface, ``HTTP/2.0``...)
``truncated``         looks like HTTP/1.x, but the first line was cut off by the capture
``bad-request-line``  the request line is complete but malformed
``bad-status-line``   the status line is complete but malformed
``interim``           only interim (1xx) responses, no final one, within the capture

A response capture may start with interim responses (``100 Continue``, ``103 Early
Hints``): ``parse_response`` skips them and parses the final response after them (RFC 9110
15.2), whose ``head_size`` counts from the start of the capture. ``101 Switching Protocols``
is final.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "RequestHead",
    "ResponseHead",
    "Unparseable",
    "looks_like_request",
    "parse_request",
    "parse_response",
]

from otelbpf.frozen import fast_constructor


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The request line and the few header fields spans need."""

    method: str
    target: str
    version: str
    host: str | None
    user_agent: str | None
    content_length: int | None
    transfer_encoding: str | None
    traceparent: str | None
    complete: bool
    # bytes from the start of the capture to the end of the blank line, when it was seen:
    # what follows is body (a detail of this capture, not of the head: not compared)
    head_size: int | None = field(default=None, compare=False)
    tracestate: str | None = None  # vendor data that travels with traceparent (W3C)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """The status line and the few header fields spans need."""

    version: str
    status_code: int
    reason: str
    content_length: int | None
    transfer_encoding: str | None
    complete: bool
    head_size: int | None = field(default=None, compare=False)  # as RequestHead's


@dataclass(frozen=True, slots=True)
class Unparseable:
    """The bytes are not a usable HTTP/1.x head; ``reason`` says why (see module doc)."""

    reason: str


MAX_METHOD_LEN = 20
MAX_HEADER_LINES = 100
# Longer Content-Length values are treated as absent: besides being absurd, a 19-digit one
# can exceed an OTLP int attribute's 64 bits, and protobuf refuses the whole export for it.
_MAX_CONTENT_LENGTH_DIGITS = 18

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
_METHOD_NAMES = {m: m.decode("latin-1") for m in KNOWN_METHODS}  # decoded once, not per request

# The fast path: a well-formed start line, matched in one go. Whatever these accept, the
# general parsers accept with the same fields; anything else goes to the general parsers,
# which say why it is unparseable. Leading CR/LF are skipped as the general parsers do.
_REQUEST_LINE = re.compile(
    rb"[\r\n]*([%b]{1,%d}) " % (re.escape(_TCHAR), MAX_METHOD_LEN)
    + rb"([\x21-\x7e\x80-\xff]+) (HTTP/1\.[01])\r?\n"  # the target: _TARGET_BYTES
)
_STATUS_LINE = re.compile(rb"[\r\n]*(HTTP/1\.[01]) ([1-5][0-9][0-9])(?:\r?\n| ([^\n]*)\n)")
# The end of a line, then an empty one: the first one after the start line ends the head.
_BLANK_LINE = re.compile(rb"\n\r?\n")

# Header fields that are extracted: LF, lower-cased name, colon, searched for in the
# lower-cased header block (whose every line starts with the LF ending the one before), so
# that only a name at the start of a line and right before the colon matches: not a name
# with whitespace before the colon, nor an obs-fold continuation line. The first one counts.
_HOST = b"\nhost:"
_USER_AGENT = b"\nuser-agent:"
_CONTENT_LENGTH = b"\ncontent-length:"
_TRANSFER_ENCODING = b"\ntransfer-encoding:"
_TRACEPARENT = b"\ntraceparent:"
_TRACESTATE = b"\ntracestate:"

_EMPTY = Unparseable("empty")
_TLS = Unparseable("tls")
_NOT_HTTP = Unparseable("not-http")
_NOT_HTTP1 = Unparseable("not-http1")
_TRUNCATED = Unparseable("truncated")
_BAD_REQUEST_LINE = Unparseable("bad-request-line")
_BAD_STATUS_LINE = Unparseable("bad-status-line")
_INTERIM = Unparseable("interim")
_LINE_ENDS = (b"\r", b"\n")


def looks_like_request(data: bytes) -> bool:
    """Cheap sniff: ``data`` starts with a well-known method followed by a space.

    Stricter than ``parse_request`` (which accepts any token as method) on purpose, so
    that other text protocols ("EHLO x", "get key", ...) are not taken for HTTP. Blank
    lines before the method are skipped, as ``parse_request`` skips them (RFC 9112 2.2).
    """
    sp = data.find(b" ", 0, _KNOWN_METHOD_MAX_LEN + 1)
    if sp > 0 and data[:sp] in KNOWN_METHODS:
        return True
    if data[:1] not in _LINE_ENDS:  # the common miss: no copy, no second search
        return False
    start = _skip_leading_blank_lines(data)
    sp = data.find(b" ", start, start + _KNOWN_METHOD_MAX_LEN + 1)
    return sp > start and data[start:sp] in KNOWN_METHODS


def parse_request(data: bytes) -> RequestHead | Unparseable:
    """Parse the head of an HTTP/1.0 or 1.1 request from a (possibly truncated) capture."""
    match = _REQUEST_LINE.match(data)
    if match is not None:
        method, target, version = match.group(1, 2, 3)
        nl = match.end() - 1
    else:
        line = _request_line(data)
        if isinstance(line, Unparseable):
            return line
        method, target, version, nl = line

    block, head_size = _header_block(data, nl)
    find = block.lower().find
    # Most fields are absent: one find each, and the value is cut out only for a hit.
    at = find(_HOST)
    host = None if at < 0 else _value(block, at + len(_HOST))
    at = find(_USER_AGENT)
    user_agent = None if at < 0 else _value(block, at + len(_USER_AGENT))
    at = find(_CONTENT_LENGTH)
    content_length = None if at < 0 else _value(block, at + len(_CONTENT_LENGTH))
    at = find(_TRANSFER_ENCODING)
    transfer_encoding = None if at < 0 else _value(block, at + len(_TRANSFER_ENCODING))
    at = find(_TRACEPARENT)
    traceparent = None if at < 0 else _value(block, at + len(_TRACEPARENT))
    tracestate = None
    if traceparent is not None:  # without a parent, a state continues nothing
        at = find(_TRACESTATE)
        tracestate = None if at < 0 else _value(block, at + len(_TRACESTATE))
    method_name = _METHOD_NAMES.get(method)
    return _request_head(
        method.decode("latin-1") if method_name is None else method_name,
        target.decode("latin-1"),
        _VERSIONS[version],
        None if host is None else host.decode("latin-1"),
        None if user_agent is None else user_agent.decode("latin-1"),
        None if content_length is None else _content_length(content_length),
        None if transfer_encoding is None else transfer_encoding.decode("latin-1").lower(),
        None if traceparent is None else traceparent.decode("latin-1"),
        head_size is not None,
        head_size,
        None if tracestate is None else tracestate.decode("latin-1"),
    )


def parse_response(data: bytes) -> ResponseHead | Unparseable:
    """Parse the head of an HTTP/1.0 or 1.1 response from a (possibly truncated) capture.

    Interim responses (1xx but 101) are skipped: the head returned is the final response's,
    or ``Unparseable("interim")`` when the capture holds none after them.
    """
    pos = 0  # where the response parsed starts: after the interim ones skipped
    while True:
        match = _STATUS_LINE.match(data, pos)
        if match is not None:
            version, code, reason = match.group(1, 2, 3)
            status_code = int(code)
            if reason is None:
                reason = b""
            elif reason.endswith(b"\r"):
                reason = reason[:-1]
            nl = match.end() - 1
        else:
            line = _status_line(data, pos)
            if isinstance(line, Unparseable):
                return line if pos == 0 else _INTERIM
            version, status_code, reason, nl = line
        if status_code >= 200 or status_code == 101:
            break
        # An interim response (100 Continue, 103 Early Hints): the final one follows its head.
        blank = _BLANK_LINE.search(data, nl)
        if blank is None:
            return _INTERIM
        pos = blank.end()

    block, head_size = _header_block(data, nl)
    find = block.lower().find
    at = find(_CONTENT_LENGTH)
    content_length = None if at < 0 else _value(block, at + len(_CONTENT_LENGTH))
    at = find(_TRANSFER_ENCODING)
    transfer_encoding = None if at < 0 else _value(block, at + len(_TRANSFER_ENCODING))
    return _response_head(
        _VERSIONS[version],
        status_code,
        reason.strip(b" \t").decode("latin-1"),
        None if content_length is None else _content_length(content_length),
        None if transfer_encoding is None else transfer_encoding.decode("latin-1").lower(),
        head_size is not None,
        head_size,
    )


def _request_line(data: bytes) -> tuple[bytes, bytes, bytes, int] | Unparseable:
    """Any request line: (method, target, version, index of its LF) or why it is unusable."""
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
    if version not in _VERSIONS:
        return _NOT_HTTP1 if version.startswith(_STATUS_PREFIX) else _BAD_REQUEST_LINE
    if not target or target.translate(None, _TARGET_BYTES):
        return _BAD_REQUEST_LINE
    return method, target, version, nl


def _status_line(data: bytes, pos: int = 0) -> tuple[bytes, int, bytes, int] | Unparseable:
    """Any status line from ``pos`` on: (version, status code, reason, index of its LF) or
    why it is unusable."""
    start = _skip_leading_blank_lines(data, pos)
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
    if version not in _VERSIONS:
        return _NOT_HTTP1 if version.startswith(_STATUS_PREFIX) and sp else _BAD_STATUS_LINE
    code, sp2, reason = rest.partition(b" ")
    if len(code) != 3 or code.translate(None, _DIGITS):
        return _BAD_STATUS_LINE
    status_code = int(code)
    if not 100 <= status_code <= 599:
        return _BAD_STATUS_LINE
    return version, status_code, reason, nl


def _skip_leading_blank_lines(data: bytes, pos: int = 0) -> int:
    """Index of the first byte from ``pos`` on after CR/LF (RFC 9112 2.2: ignore empty
    lines before the start line, e.g. a stray CRLF after the previous body)."""
    if data[pos : pos + 1] not in _LINE_ENDS:
        return pos
    return len(data) - len(data[pos:].lstrip(b"\r\n"))


def _header_block(data: bytes, nl: int) -> tuple[bytes, int | None]:
    """The header lines after the start line that ends with the LF at ``nl``, and the size
    of the head up to the end of the blank line ending it (None: not seen).

    The block runs from that LF to the LF ending the last header line (excluded), so every
    line in it starts with an LF. Only complete lines (ending in LF) count: a line cut off
    by the end of the capture is left out; so is every line after the first
    ``MAX_HEADER_LINES``.
    """
    blank = _BLANK_LINE.search(data, nl)
    block = data[nl : blank.start()] if blank is not None else data[nl : data.rfind(b"\n")]
    # A line holds at least one byte besides its LF, so a short block cannot be over the cap.
    if len(block) > 2 * MAX_HEADER_LINES and block.count(b"\n") > MAX_HEADER_LINES:
        cut = -1
        for _ in range(MAX_HEADER_LINES + 1):
            cut = block.find(b"\n", cut + 1)
        block = block[:cut]  # up to the LF that starts line MAX_HEADER_LINES + 1
    return block, None if blank is None else blank.end()


def _value(block: bytes, start: int) -> bytes:
    """The field value from ``start`` to the end of its line, without the line's CR and
    the spaces and tabs around it."""
    end = block.find(b"\n", start)
    if end < 0:
        end = len(block)
    if block[end - 1] == 0x0D:  # block[start - 1] is the colon: never a CR
        end -= 1
    return block[start:end].strip(b" \t")


def _content_length(raw: bytes | None) -> int | None:
    if not raw or len(raw) > _MAX_CONTENT_LENGTH_DIGITS or raw.translate(None, _DIGITS):
        return None
    return int(raw)


_request_head = fast_constructor(RequestHead)
_response_head = fast_constructor(ResponseHead)
