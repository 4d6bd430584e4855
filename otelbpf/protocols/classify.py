"""Protocol stage: say what each exchange speaks and attach its parsed fields.

HTTP/1.x heads go through the sans-IO parser. TLS records seen at the socket layer are
ciphertext no library hook decrypted: they are marked, counted and never turned into spans.
Anything else is unknown and counted as unparsed.
"""

from __future__ import annotations

from otelbpf.exchange import Exchange, Protocol
from otelbpf.protocols import http1

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


def classify(exchange: Exchange) -> Protocol:
    head = exchange.request_head
    if http1.looks_like_request(head):
        request = http1.parse_request(head)
        if isinstance(request, http1.RequestHead):
            exchange.protocol = _HTTP1
            exchange.http_request = request
            response = http1.parse_response(exchange.response_head)
            if isinstance(response, http1.ResponseHead):
                exchange.http_response = response
            return _HTTP1
    if is_tls_record(head) or is_tls_record(exchange.response_head):
        exchange.protocol = _TLS
        return _TLS
    exchange.protocol = _UNKNOWN
    return _UNKNOWN
