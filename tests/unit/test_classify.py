"""The protocol stage: classification, and the memo of parsed heads it keeps."""

from __future__ import annotations

from otelbpf.abi import Role
from otelbpf.exchange import Protocol
from otelbpf.protocols import http1
from otelbpf.protocols.classify import HeadMemo, classify
from tests.unit.test_http_spans import make_exchange

REQUEST = b"GET /cart HTTP/1.1\r\nHost: shop\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class CountingParser:
    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, data: bytes) -> http1.RequestHead | http1.Unparseable:
        self.calls.append(data)
        return http1.parse_request(data)


def test_a_repeated_head_is_parsed_once_and_gives_the_same_result() -> None:
    parser = CountingParser()
    memo = HeadMemo(parser)
    first = memo(REQUEST)
    again = memo(bytes(bytearray(REQUEST)))  # equal bytes, another object: as from the ring
    assert first is again
    assert first == http1.parse_request(REQUEST)
    assert parser.calls == [REQUEST]


def test_unparseable_heads_are_remembered_too() -> None:
    parser = CountingParser()
    memo = HeadMemo(parser)
    assert memo(b"\x16\x03\x01") == http1.Unparseable("tls")
    assert memo(b"\x16\x03\x01") == http1.Unparseable("tls")
    assert len(parser.calls) == 1


def test_a_full_memo_starts_over() -> None:
    parser = CountingParser()
    memo = HeadMemo(parser, capacity=2)
    heads = [f"GET /{n} HTTP/1.1\r\n\r\n".encode() for n in range(3)]
    for head in heads:
        memo(head)
    assert len(memo._parsed) == 1  # the third found it full: only it is kept
    memo(heads[2])
    memo(heads[0])
    assert parser.calls == [heads[0], heads[1], heads[2], heads[0]]
    assert all(memo(head).target == f"/{n}" for n, head in enumerate(heads))


def test_classify_attaches_the_parsed_heads() -> None:
    exchange = make_exchange(Role.SERVER, REQUEST, RESPONSE)
    assert classify(exchange) is Protocol.HTTP1
    assert exchange.http_request == http1.parse_request(REQUEST)
    assert exchange.http_response == http1.parse_response(RESPONSE)
    # a second exchange with the same bytes gets equal heads, from the memo
    repeat = make_exchange(Role.SERVER, bytes(bytearray(REQUEST)), bytes(bytearray(RESPONSE)))
    assert classify(repeat) is Protocol.HTTP1
    assert repeat.http_request is exchange.http_request
    assert repeat.http_response is exchange.http_response


def test_tls_and_unknown_bytes() -> None:
    tls = make_exchange(Role.SERVER, b"\x17\x03\x03\x00\x10" + bytes(16), b"\x17\x03\x03\x00\x10")
    assert classify(tls) is Protocol.TLS
    other = make_exchange(Role.SERVER, b"PING\r\n", b"+PONG\r\n")
    assert classify(other) is Protocol.UNKNOWN
    assert other.http_request is None


def test_a_request_after_a_stray_crlf_is_http1() -> None:
    # a stray CRLF after the previous body: parse_request skips it (RFC 9112 2.2), and so
    # must the sniff before it
    exchange = make_exchange(Role.SERVER, b"\r\n" + REQUEST, RESPONSE)
    assert classify(exchange) is Protocol.HTTP1
    assert exchange.protocol is Protocol.HTTP1
    assert exchange.http_request == http1.parse_request(REQUEST)
    assert exchange.http_request.target == "/cart"


def test_classify_attaches_the_final_response_after_an_interim_one() -> None:
    response = b"HTTP/1.1 100 Continue\r\n\r\n" + RESPONSE
    exchange = make_exchange(Role.SERVER, REQUEST, response)
    assert classify(exchange) is Protocol.HTTP1
    assert exchange.http_response is not None
    assert exchange.http_response.status_code == 200
    assert exchange.http_response.head_size == len(response) - 2
    alone = make_exchange(Role.SERVER, REQUEST, b"HTTP/1.1 100 Continue\r\n\r\n")
    assert classify(alone) is Protocol.HTTP1
    assert alone.http_response is None  # no final status: unknown, not 100
