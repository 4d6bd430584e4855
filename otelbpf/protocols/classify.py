"""Protocol stage: say what each exchange speaks and attach its parsed fields.

HTTP/1.x heads go through the sans-IO parser. TLS records seen at the socket layer are
ciphertext no library hook decrypted: they are marked, counted and never turned into spans.
Anything else is unknown and counted as unparsed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from otelbpf.exchange import Exchange, Protocol
from otelbpf.protocols import http1

Parsed = TypeVar("Parsed")
MEMO_CAPACITY = 1024  # heads kept per direction: 1.5 MiB at most with the default head sizes

# TLS record types (handshake, application data, alert, change cipher spec) then version 3.x
_TLS_RECORD_TYPES = frozenset((0x14, 0x15, 0x16, 0x17))

# Module constants: an enum member looked up on its class costs more than a global, per exchange.
_HTTP1 = Protocol.HTTP1
_TLS = Protocol.TLS
_UNKNOWN = Protocol.UNKNOWN


def is_tls_record(head: bytes) -> bool:
    return len(head) >= 3 and head[0] in _TLS_RECORD_TYPES and head[1] == 0x03 and head[2] <= 0x04


def is_tls_handshake(head: bytes) -> bool:
    """A TLS connection being set up, hooked or not: a handshake record first, or a change
    cipher spec (TLS 1.3's client Finished flight in middlebox-compatible mode). Application
    data first is traffic no hook decrypted."""
    return is_tls_record(head) and head[0] in (0x14, 0x16)


class HeadMemo(Generic[Parsed]):
    """A parser's results by the captured bytes.

    A keep-alive client repeats its request head byte for byte, and a server its response
    head (a static file, a health check, a redirect, an error page: the Date changes once a
    second). Parsing a head took 2.6 us, looking it up takes its hash (0.2 us for 360
    bytes); a head never seen again costs the lookup and its slot (0.8 us in all, measured
    on this machine). The parsed heads are frozen, so sharing them is safe. Bounded: when
    full it starts over, which costs one parse per head still in use.
    """

    def __init__(self, parse: Callable[[bytes], Parsed], capacity: int = MEMO_CAPACITY) -> None:
        self._parse = parse
        self._capacity = capacity
        self._parsed: dict[bytes, Parsed] = {}

    def __call__(self, data: bytes) -> Parsed:
        found = self._parsed.get(data)
        if found is None:
            if len(self._parsed) >= self._capacity:
                self._parsed.clear()
            found = self._parsed[data] = self._parse(data)
        return found


_parse_request = HeadMemo(http1.parse_request)
_parse_response = HeadMemo(http1.parse_response)


def classify(exchange: Exchange) -> Protocol:
    head = exchange.request_head
    if http1.looks_like_request(head):
        request = _parse_request(head)
        if isinstance(request, http1.RequestHead):
            exchange.protocol = _HTTP1
            exchange.http_request = request
            response = _parse_response(exchange.response_head)
            if isinstance(response, http1.ResponseHead):
                exchange.http_response = response
            return _HTTP1
    if is_tls_record(head) or is_tls_record(exchange.response_head):
        exchange.protocol = _TLS
        return _TLS
    exchange.protocol = _UNKNOWN
    return _UNKNOWN
