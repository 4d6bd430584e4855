"""The sans-IO HTTP/2 tracker and the spans of its streams, on frames made by hyperframe/hpack."""

from __future__ import annotations

import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.semconv._incubating.attributes.http_attributes import HTTP_REQUEST_BODY_SIZE
from opentelemetry.semconv._incubating.attributes.rpc_attributes import (
    RPC_GRPC_STATUS_CODE,
    RPC_METHOD,
    RPC_SERVICE,
    RPC_SYSTEM,
)
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS, CLIENT_PORT
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import NETWORK_PROTOCOL_VERSION
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_FULL, URL_SCHEME
from opentelemetry.trace import SpanKind

from otelbpf.abi import Role
from otelbpf.exchange import SocketAddress
from otelbpf.export.http_spans import SpanOptions
from otelbpf.export.stream_spans import (
    HEADERS_INCOMPLETE,
    StreamConnection,
    grpc_span,
    http2_span,
    is_grpc,
)
from otelbpf.protocols.http2 import (
    CLIENT_PREFACE,
    MAX_OPEN_STREAMS,
    UNKNOWN_HEADER,
    Http2Connection,
    Side,
    looks_like_http2,
)

GRPC_REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/helloworld.Greeter/SayHello"),
    (":authority", "127.0.0.1:50051"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]
SERVER = StreamConnection(
    pid=10,
    tid=11,
    fd=5,
    conn_id=1,
    role=Role.SERVER,
    tls=False,
    local=SocketAddress("127.0.0.1", 50051),
    peer=SocketAddress("127.0.0.1", 40000),
)
CLIENT = StreamConnection(
    pid=20,
    tid=21,
    fd=6,
    conn_id=2,
    role=Role.CLIENT,
    tls=True,
    local=SocketAddress("127.0.0.1", 40000),
    peer=SocketAddress("127.0.0.1", 8443),
)


class Peer:
    """One side's encoder: frames as a real HTTP/2 endpoint would write them."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()

    def headers(self, stream_id: int, headers: list, end_stream: bool = False) -> bytes:
        frame = HeadersFrame(stream_id)
        frame.data = self.encoder.encode(headers)
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame.serialize()

    def split_headers(self, stream_id: int, headers: list) -> bytes:
        block = self.encoder.encode(headers)
        first, second = HeadersFrame(stream_id), ContinuationFrame(stream_id)
        first.data, second.data = block[:5], block[5:]
        second.flags.add("END_HEADERS")
        return first.serialize() + second.serialize()


def data(stream_id: int, payload: bytes, end_stream: bool = False, pad: int = 0) -> bytes:
    frame = DataFrame(stream_id)
    frame.data = payload
    if pad:
        frame.flags.add("PADDED")
        frame.pad_length = pad
    if end_stream:
        frame.flags.add("END_STREAM")
    return frame.serialize()


def feed(conn: Http2Connection, side: Side, payload: bytes, ts: int, total: int | None = None):
    return conn.receive(side, payload, len(payload) if total is None else total, ts)


def grpc_call(client: Peer, server: Peer, stream_id: int, status: int = 0) -> tuple[bytes, bytes]:
    request = client.headers(stream_id, GRPC_REQUEST) + data(stream_id, b"\0\0\0\0\3abc", True)
    if status == 0:
        response = (
            server.headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
            + data(stream_id, b"\0\0\0\0\2ok")
            + server.headers(stream_id, [("grpc-status", "0")], end_stream=True)
        )
    else:  # trailers-only
        response = server.headers(
            stream_id,
            [
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", str(status)),
            ],
            end_stream=True,
        )
    return request, response


def test_unary_call_with_preface_settings_and_trailers():
    conn, client, server = Http2Connection(), Peer(), Peer()
    request, response = grpc_call(client, server, 1)
    assert (
        feed(conn, Side.TO_SERVER, CLIENT_PREFACE + SettingsFrame(0).serialize() + request, 100)
        == []
    )
    (stream,) = feed(conn, Side.TO_CLIENT, SettingsFrame(0).serialize() + response, 250)
    assert stream.stream_id == 1
    assert stream.request_headers == GRPC_REQUEST
    assert stream.header(":status", "response") == "200"
    assert stream.trailers == [("grpc-status", "0")]
    assert (stream.start_ns, stream.end_ns) == (100, 250)
    assert (stream.request_data, stream.response_data) == (8, 7)
    assert (stream.partial, stream.reset) == (False, False)
    assert conn.streams == {}


def test_interleaved_streams_each_complete_once():
    conn, client, server = Http2Connection(), Peer(), Peer()
    req1, resp1 = grpc_call(client, server, 1)
    req3, resp3 = grpc_call(client, server, 3, status=5)
    # both requests before either response: two streams open at once on one connection
    assert feed(conn, Side.TO_SERVER, CLIENT_PREFACE + req1 + req3, 1) == []
    assert set(conn.streams) == {1, 3}
    finished = feed(conn, Side.TO_CLIENT, resp1 + resp3, 2)
    assert [s.stream_id for s in finished] == [1, 3]
    assert finished[1].header("grpc-status", "response") == "5"
    assert not any(s.partial for s in finished)


def test_bytes_split_at_every_offset_give_the_same_stream():
    length = len(CLIENT_PREFACE + grpc_call(Peer(), Peer(), 1)[0])
    for cut in range(1, length):
        conn, client, server = Http2Connection(), Peer(), Peer()
        request, response = grpc_call(client, server, 1)
        wire = CLIENT_PREFACE + request
        feed(conn, Side.TO_SERVER, wire[:cut], 1)
        feed(conn, Side.TO_SERVER, wire[cut:], 2)
        (stream,) = feed(conn, Side.TO_CLIENT, response, 3)
        assert stream.request_headers == GRPC_REQUEST, cut
        assert stream.request_data == 8, cut


def test_data_beyond_the_copied_bytes_is_counted_and_skipped():
    conn, client, server = Http2Connection(), Peer(), Peer()
    big = client.headers(1, GRPC_REQUEST) + data(1, b"x" * 20000, True)
    copied = big[:8192]  # the kernel copied 8 KiB of a 20 KiB write
    assert feed(conn, Side.TO_SERVER, copied, 1, total=len(big)) == []
    (stream,) = feed(conn, Side.TO_CLIENT, server.headers(1, [(":status", "200")], True), 2)
    assert stream.request_data == 20000
    assert conn.desyncs == 0 and not stream.partial


def test_headers_lost_in_a_gap_desynchronise_and_mark_later_streams_partial():
    conn, client, server = Http2Connection(), Peer(), Peer()
    first = client.headers(1, GRPC_REQUEST) + data(1, b"y" * 10, True)
    second = client.headers(3, GRPC_REQUEST)  # lost: beyond the copied bytes
    feed(conn, Side.TO_SERVER, first, 1, total=len(first) + len(second))
    assert conn.desyncs == 1
    later = client.headers(5, GRPC_REQUEST, end_stream=True)
    feed(conn, Side.TO_SERVER, later, 2)
    (stream,) = feed(conn, Side.TO_CLIENT, server.headers(5, [(":status", "200")], True), 3)
    assert stream.partial is True


def test_continuation_frames_rst_stream_and_close():
    conn, client = Http2Connection(), Peer()
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.split_headers(1, GRPC_REQUEST), 1)
    feed(conn, Side.TO_SERVER, client.headers(3, GRPC_REQUEST), 2)
    (reset,) = feed(conn, Side.TO_CLIENT, RstStreamFrame(1, error_code=8).serialize(), 3)
    assert reset.stream_id == 1 and reset.reset and reset.request_headers == GRPC_REQUEST
    (closed,) = conn.close(9)
    assert (closed.stream_id, closed.reset, closed.end_ns) == (3, True, 9)


def test_joined_mid_connection_unknown_references_are_placeholders():
    client, server = Peer(), Peer()
    grpc_call(client, server, 1)  # fills both dynamic tables the agent never sees
    request, response = grpc_call(client, server, 3)
    conn = Http2Connection(joined_mid_connection=True)
    feed(conn, Side.TO_SERVER, request, 5)
    (stream,) = feed(conn, Side.TO_CLIENT, response, 6)
    assert stream.partial is True
    assert stream.header(":method") == "POST"  # a static-table entry
    assert (UNKNOWN_HEADER, "") in stream.request_headers
    # grpc-status was indexed by the first call's trailers, which the agent never saw
    assert stream.trailers == [(UNKNOWN_HEADER, "")]


def test_looks_like_http2():
    client = Peer()
    assert looks_like_http2(CLIENT_PREFACE)
    assert looks_like_http2(client.headers(1, GRPC_REQUEST) + data(1, b"z"))
    assert not looks_like_http2(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not looks_like_http2(b"*1\r\n$4\r\nPING\r\n")  # redis
    assert not looks_like_http2(b"\x16\x03\x01\x02\x00")  # TLS
    # MySQL: a 3-byte little-endian length reads as a plausible DATA frame of 2 MiB, which
    # the bytes the exchange moved cannot hold; real frames fit in theirs
    query = b"\x21\x00\x00\x00\x03SELECT @@version_comment LIMIT 1"
    ok_packet = b"\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00"
    assert not looks_like_http2(query, len(query))
    assert not looks_like_http2(ok_packet, len(ok_packet))
    frames = client.headers(1, GRPC_REQUEST) + data(1, b"z" * 5000)
    assert looks_like_http2(frames[:64], len(frames))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.booleans())
def test_garbage_never_raises(chunks, joined):
    conn = Http2Connection(joined_mid_connection=joined)
    for i, chunk in enumerate(chunks):
        side = Side.TO_SERVER if i % 2 == 0 else Side.TO_CLIENT
        conn.receive(side, chunk, len(chunk) + (i % 3) * 7, i)
    conn.close(99)


# ---------------------------------------------------------------- spans


def _stream(request_headers, response_headers, trailers=(), partial=False):
    conn, client, server = Http2Connection(), Peer(), Peer()
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.headers(1, request_headers, True), 1_000)
    wire = server.headers(1, response_headers, end_stream=not trailers)
    if trailers:
        wire += server.headers(1, list(trailers), end_stream=True)
    (stream,) = feed(conn, Side.TO_CLIENT, wire, 21_000_000)
    stream.partial = partial
    return stream


@pytest.mark.parametrize(
    ("code", "server_error", "client_error"),
    [(0, False, False), (5, False, True), (2, True, True), (13, True, True), (14, True, True)],
)
def test_grpc_status_rules(code, server_error, client_error):
    stream = _stream(
        GRPC_REQUEST,
        [(":status", "200"), ("content-type", "application/grpc")],
        [("grpc-status", str(code))],
    )
    assert is_grpc(stream)
    server_span = grpc_span(stream, SERVER)
    client_span = grpc_span(stream, CLIENT)
    assert server_span.is_error is server_error
    assert client_span.is_error is client_error
    assert server_span.attributes.get(ERROR_TYPE) == (str(code) if server_error else None)


def test_grpc_server_span_attributes():
    stream = _stream(
        GRPC_REQUEST,
        [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "5")],
    )  # trailers-only
    span = grpc_span(stream, SERVER)
    assert span.name == "helloworld.Greeter/SayHello"
    assert span.kind is SpanKind.SERVER
    assert (span.start_ns, span.end_ns) == (1_000, 21_000_000)
    assert span.attributes == {
        RPC_SYSTEM: "grpc",
        RPC_SERVICE: "helloworld.Greeter",
        RPC_METHOD: "SayHello",
        RPC_GRPC_STATUS_CODE: 5,
        NETWORK_PROTOCOL_VERSION: "2",
        SERVER_ADDRESS: "127.0.0.1",
        SERVER_PORT: 50051,
        CLIENT_ADDRESS: "127.0.0.1",
        CLIENT_PORT: 40000,
    }
    assert span.duration_metric == "rpc"
    assert span.metric_attributes == {
        RPC_SYSTEM: "grpc",
        RPC_SERVICE: "helloworld.Greeter",
        RPC_METHOD: "SayHello",
        RPC_GRPC_STATUS_CODE: 5,
        SERVER_PORT: 50051,
    }


def test_grpc_with_unknown_path_is_marked():
    stream = _stream(
        [(":method", "POST"), ("content-type", "application/grpc")],
        [(":status", "200"), ("grpc-status", "0")],
        partial=True,
    )
    span = grpc_span(stream, CLIENT)
    assert span.name == "grpc"
    assert span.attributes[HEADERS_INCOMPLETE] is True
    assert RPC_SERVICE not in span.attributes


def test_plain_http2_client_span():
    request = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/items/42?a=b"),
        (":authority", "example.test:8443"),
        ("user-agent", "curl/7.88.1"),
    ]
    stream = _stream(request, [(":status", "404")])
    assert not is_grpc(stream)
    span = http2_span(stream, CLIENT, SpanOptions())
    assert span.name == "GET /items/{id}"
    assert span.kind is SpanKind.CLIENT
    assert span.is_error is True
    assert span.attributes[URL_FULL] == "https://example.test:8443/items/42?a=REDACTED"
    assert span.attributes[NETWORK_PROTOCOL_VERSION] == "2"
    assert span.attributes[HTTP_RESPONSE_STATUS_CODE] == 404
    assert span.duration_metric == "http"


def test_plain_http2_server_span():
    request = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "h:80")]
    stream = _stream(request, [(":status", "200")])
    span = http2_span(stream, SERVER, SpanOptions())
    assert span.attributes[URL_SCHEME] == "http"
    assert span.attributes[HTTP_ROUTE] == "/"
    assert span.attributes[HTTP_REQUEST_METHOD] == "GET"
    assert span.attributes[SERVER_PORT] == 80
    assert HEADERS_INCOMPLETE not in span.attributes


def test_numbers_in_headers_that_are_no_numbers_are_left_out():
    # '²' passes str.isdigit() but int() raises; 30 digits would not fit an OTLP int
    request = [(":method", "POST"), (":path", "/up"), ("content-length", "1" * 30)]
    stream = _stream(request, [(":status", "2\u00b2"), ("content-length", "\u00b2")])
    span = http2_span(stream, SERVER, SpanOptions())
    assert HTTP_RESPONSE_STATUS_CODE not in span.attributes
    # the bytes counted, not what a header claims
    assert span.attributes[HTTP_REQUEST_BODY_SIZE] == 0
    grpc = _stream(GRPC_REQUEST, [(":status", "200")], [("grpc-status", "\u00b9")])
    assert RPC_GRPC_STATUS_CODE not in grpc_span(grpc, SERVER).attributes


def elide(wire: bytes) -> bytes:
    """What the kernel's frame walk sends: every frame, DATA frames as their header alone."""
    out, offset = bytearray(), 0
    while offset + 9 <= len(wire):
        length = int.from_bytes(wire[offset : offset + 3], "big")
        frame = wire[offset : offset + 9 + length]
        out += frame[:9] if wire[offset + 3] == 0 else frame
        offset += 9 + length
    return bytes(out)


def test_trace_context_of_http2_and_grpc_requests():
    parent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    context = [("traceparent", parent), ("tracestate", "vendor=a")]
    plain = _stream([(":method", "GET"), (":path", "/"), *context], [(":status", "200")])
    grpc = _stream(GRPC_REQUEST + context, [(":status", "200")], [("grpc-status", "0")])
    for span in (http2_span(plain, SERVER, SpanOptions()), grpc_span(grpc, SERVER)):
        assert (span.traceparent, span.tracestate) == (parent, "vendor=a")


def test_elided_chunks_count_data_from_headers():
    conn, client, server = Http2Connection(), Peer(), Peer()
    request = client.headers(1, GRPC_REQUEST) + data(1, b"q" * 50_000, True)
    # the kernel passed over the preface and the DATA payload: only headers came up
    assert (
        conn.receive(
            Side.TO_SERVER, elide(request), len(CLIENT_PREFACE) + len(request), 1, elided=True
        )
        == []
    )
    response = (
        server.headers(1, [(":status", "200"), ("content-type", "application/grpc")])
        + data(1, b"r" * 70_000)
        + server.headers(1, [("grpc-status", "0")], end_stream=True)
    )
    (stream,) = conn.receive(Side.TO_CLIENT, elide(response), len(response), 2, elided=True)
    assert (stream.request_data, stream.response_data) == (50_000, 70_000)
    assert stream.trailers == [("grpc-status", "0")]
    assert stream.partial is False and conn.desyncs == 0


def test_a_lost_walk_desynchronises_that_direction():
    conn, client = Http2Connection(), Peer()
    first = client.headers(1, GRPC_REQUEST, end_stream=True)
    conn.receive(Side.TO_SERVER, elide(first), len(first) + 100, 1, elided=True, walk_lost=True)
    assert conn.desyncs == 1 and conn.unreliable_table is True


# ---------------------------------------------------------------- review fixes


def _path_request(path: str) -> list[tuple[str, str]]:
    return [(k, path if k == ":path" else v) for k, v in GRPC_REQUEST]


PING_ON_STREAM_1 = bytes.fromhex("000008060000000001") + bytes(8)  # hyperframe rejects


def test_a_frame_its_stream_forbids_is_passed_over_alone():
    conn, client, server = Http2Connection(), Peer(), Peer()
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.headers(1, _path_request("/a.A/One")), 1)
    request = PING_ON_STREAM_1 + client.headers(3, _path_request("/b.B/Two"), end_stream=True)
    feed(conn, Side.TO_SERVER, request, 2)
    assert list(conn.streams) == [1, 3]
    assert (conn.desyncs, conn.unreliable_table) == (0, False)
    # the second request inserted :path /b.B/Two into the client's table: a later call that
    # refers to it by index must read it, not an entry a lost insert shifted into its place
    feed(conn, Side.TO_SERVER, client.headers(5, _path_request("/b.B/Two"), True), 3)
    response = server.headers(5, [(":status", "200"), ("grpc-status", "0")], end_stream=True)
    (stream,) = feed(conn, Side.TO_CLIENT, response, 4)
    assert stream.header(":path") == "/b.B/Two"
    assert stream.partial is False


def test_a_rejected_frame_split_across_chunks_waits_for_its_end():
    conn, client = Http2Connection(), Peer()
    wire = CLIENT_PREFACE + PING_ON_STREAM_1 + client.headers(1, GRPC_REQUEST)
    cut = len(CLIENT_PREFACE) + 12  # inside the rejected PING's payload
    feed(conn, Side.TO_SERVER, wire[:cut], 1)
    feed(conn, Side.TO_SERVER, wire[cut:], 2)
    assert conn.streams[1].request_headers == GRPC_REQUEST
    assert (conn.desyncs, conn.unreliable_table) == (0, False)


def test_a_rejected_header_block_frame_marks_the_table_unreliable():
    conn, client = Http2Connection(), Peer()
    headers_on_stream_0 = bytes.fromhex("000003010400000000") + b"\x82\x86\x84"
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + headers_on_stream_0, 1)
    assert (conn.desyncs, conn.unreliable_table) == (0, True)
    feed(conn, Side.TO_SERVER, client.headers(1, GRPC_REQUEST, True), 2)
    assert conn.streams[1].partial is True


def test_a_malformed_headers_body_marks_the_table_unreliable():
    conn = Http2Connection()
    # PADDED, pad length 200 in a 4-byte payload: hyperframe rejects the body
    bad = bytes.fromhex("000004010c00000001") + bytes([200]) + b"\x82\x86\x84"
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + bad, 1)
    assert (conn.desyncs, conn.unreliable_table, conn.streams) == (0, True, {})


def test_a_rejected_frame_with_an_unbelievable_length_desynchronises():
    conn = Http2Connection()
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + PING_ON_STREAM_1 + b"\xff" * 9, 1)
    assert (conn.desyncs, conn.unreliable_table) == (1, True)


def test_a_desync_marks_the_table_unreliable():
    conn = Http2Connection()
    # a PING on stream 1 whose length runs past what a peer sends unasked, cut off: no frame
    # header follows to vouch for it
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + bytes.fromhex("00ffff060000000001"), 1)
    assert (conn.desyncs, conn.unreliable_table) == (1, True)


def test_a_clients_goaway_ends_no_call():
    conn, client, server = Http2Connection(), Peer(), Peer()
    request, response = grpc_call(client, server, 1)
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + request, 1)
    goaway = GoAwayFrame(0, last_stream_id=0).serialize()  # it accepts no server push
    assert feed(conn, Side.TO_SERVER, goaway, 2) == []
    (stream,) = feed(conn, Side.TO_CLIENT, response, 3)
    assert (stream.stream_id, stream.reset, stream.reset_code, stream.end_ns) == (1, False, None, 3)


def test_a_servers_goaway_ends_the_client_streams_above_its_last_stream_id():
    conn, client, server = Http2Connection(), Peer(), Peer()
    req1, resp1 = grpc_call(client, server, 1)
    req3, _ = grpc_call(client, server, 3)
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + req1 + req3, 1)
    goaway = GoAwayFrame(0, last_stream_id=1).serialize()
    (refused,) = feed(conn, Side.TO_CLIENT, goaway, 2)
    assert (refused.stream_id, refused.reset, refused.reset_code, refused.end_ns) == (3, True, 7, 2)
    span = grpc_span(refused, CLIENT)  # REFUSED_STREAM: UNAVAILABLE, gRPC's retryable status
    assert (span.is_error, span.attributes[RPC_GRPC_STATUS_CODE]) == (True, 14)
    assert span.attributes[ERROR_TYPE] == "14"
    (done,) = feed(conn, Side.TO_CLIENT, resp1, 3)  # stream 1 goes on to its end
    assert (done.stream_id, done.reset, done.trailers) == (1, False, [("grpc-status", "0")])


def test_header_values_that_are_not_utf8_are_kept_and_cost_nothing_else():
    conn, client, server = Http2Connection(), Peer(), Peer()
    obs_text = GRPC_REQUEST + [(b"user-agent", b"caf\xe9")]  # RFC 9110 5.5 obs-text
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.headers(1, obs_text, True), 1)
    (stream,) = feed(conn, Side.TO_CLIENT, grpc_call(client, server, 1)[1], 2)
    assert stream.request_headers == GRPC_REQUEST + [("user-agent", "caf\ufffd")]
    assert (stream.partial, conn.unreliable_table) == (False, False)
    feed(conn, Side.TO_SERVER, client.headers(3, GRPC_REQUEST, True), 3)
    (later,) = feed(conn, Side.TO_CLIENT, grpc_call(client, server, 3)[1], 4)
    assert (later.request_headers, later.partial) == (GRPC_REQUEST, False)


def test_a_header_list_beyond_64_kib_is_decoded():
    conn, client, server = Http2Connection(), Peer(), Peer()
    big = GRPC_REQUEST + [("cookie", "x" * 70_000)]
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.headers(1, big, True), 1)
    (stream,) = feed(conn, Side.TO_CLIENT, grpc_call(client, server, 1)[1], 2)
    assert stream.request_headers == big
    assert (stream.partial, conn.unreliable_table) == (False, False)


def _open_streams(conn: Http2Connection, client: Peer, count: int) -> list[int]:
    opened = [2 * i + 1 for i in range(count)]
    for stream_id in opened:
        feed(conn, Side.TO_SERVER, client.headers(stream_id, GRPC_REQUEST, True), stream_id)
    return opened


def test_open_streams_are_capped_and_the_oldest_dropped():
    dropped = []
    conn, client = Http2Connection(on_stale=lambda: dropped.append(1)), Peer()
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE, 0)
    opened = _open_streams(conn, client, MAX_OPEN_STREAMS + 10)
    assert MAX_OPEN_STREAMS == 4096
    assert list(conn.streams) == opened[10:]
    assert (conn.stale_streams, len(dropped)) == (10, 10)


def test_a_thousand_calls_in_flight_on_one_connection_are_all_kept():
    """grpc-go clients send every call over one connection, and grpc-go servers announce no
    stream limit: the 512 open streams once kept dropped the slowest calls' spans."""
    conn, client, server = Http2Connection(), Peer(), Peer()
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE, 0)
    opened = _open_streams(conn, client, 1000)
    assert (len(conn.streams), conn.stale_streams) == (1000, 0)
    response = server.headers(1, [(":status", "200"), ("grpc-status", "0")], True)
    (first,) = feed(conn, Side.TO_CLIENT, response, 2000)
    assert first.stream_id == opened[0]


def test_the_servers_stream_limit_bounds_the_open_streams():
    """Past the server's SETTINGS_MAX_CONCURRENT_STREAMS an end was lost: the oldest go."""
    conn, client = Http2Connection(), Peer()
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE, 0)
    settings = SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 100})
    feed(conn, Side.TO_CLIENT, settings.serialize(), 1)
    opened = _open_streams(conn, client, 110)
    assert list(conn.streams) == opened[10:]
    assert conn.stale_streams == 10


def test_the_padding_of_data_frames_is_no_body():
    conn, client, server = Http2Connection(), Peer(), Peer()
    request = [(":method", "POST"), (":scheme", "http"), (":path", "/up"), (":authority", "x")]
    wire = CLIENT_PREFACE + client.headers(1, request) + data(1, b"hello", True, pad=200)
    feed(conn, Side.TO_SERVER, wire, 1)
    (stream,) = feed(conn, Side.TO_CLIENT, server.headers(1, [(":status", "200")], True), 2)
    assert stream.request_data == 5
    assert http2_span(stream, SERVER, SpanOptions()).attributes[HTTP_REQUEST_BODY_SIZE] == 5


@pytest.mark.parametrize("cut", [1, 2, 3, 6, 50, 205, 206])
@pytest.mark.parametrize("lost", [False, True])
def test_padding_is_no_body_when_the_frame_is_split(cut, lost):
    """The payload (pad length byte, 5 bytes, 200 of padding) cut after `cut` bytes: the rest
    comes in the next chunk, or (raw mode) was not copied at all."""
    conn, client, server = Http2Connection(), Peer(), Peer()
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.headers(1, GRPC_REQUEST), 1)
    frame = data(1, b"hello", True, pad=200)
    if lost:
        feed(conn, Side.TO_SERVER, frame[: 9 + cut], 2, total=len(frame))
    else:
        feed(conn, Side.TO_SERVER, frame[: 9 + cut], 2)
        feed(conn, Side.TO_SERVER, frame[9 + cut :], 3)
    (stream,) = feed(conn, Side.TO_CLIENT, server.headers(1, [(":status", "200")], True), 4)
    assert (stream.request_data, conn.desyncs) == (5, 0)


@pytest.mark.parametrize("lost", [False, True])
def test_a_padded_frame_whose_header_ends_a_chunk(lost):
    """The pad length is the payload's first byte: with the frame header at a chunk's end it
    is the next chunk's first; when that was not copied, the padding is not known and counts
    as body."""
    conn, client, server = Http2Connection(), Peer(), Peer()
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.headers(1, GRPC_REQUEST), 1)
    frame = data(1, b"hello", True, pad=200)
    if lost:
        feed(conn, Side.TO_SERVER, frame[:9], 2, total=len(frame))
    else:
        feed(conn, Side.TO_SERVER, frame[:9], 2)
        feed(conn, Side.TO_SERVER, frame[9:12], 3)
        feed(conn, Side.TO_SERVER, frame[12:], 4)
    (stream,) = feed(conn, Side.TO_CLIENT, server.headers(1, [(":status", "200")], True), 5)
    assert (stream.request_data, conn.desyncs) == (206 if lost else 5, 0)


# ---------------------------------------------------------------- reset spans


@pytest.mark.parametrize(
    ("rst_code", "grpc_code", "server_error", "client_error"),
    [
        (0x8, 1, False, True),  # CANCEL: CANCELLED, the caller's doing
        (0x0, 13, True, True),  # NO_ERROR before a status: INTERNAL
        (0x1, 13, True, True),  # PROTOCOL_ERROR
        (0x2, 13, True, True),  # INTERNAL_ERROR
        (0x3, 13, True, True),  # FLOW_CONTROL_ERROR
        (0x4, 13, True, True),  # SETTINGS_TIMEOUT
        (0x6, 13, True, True),  # FRAME_SIZE_ERROR
        (0x7, 14, True, True),  # REFUSED_STREAM: UNAVAILABLE
        (0x9, 13, True, True),  # COMPRESSION_ERROR
        (0xA, 13, True, True),  # CONNECT_ERROR
        (0xB, 8, False, True),  # ENHANCE_YOUR_CALM: RESOURCE_EXHAUSTED
        (0xC, 7, False, True),  # INADEQUATE_SECURITY: PERMISSION_DENIED
        (0x5, 13, True, True),  # STREAM_CLOSED: unmapped by gRPC, INTERNAL as in grpc-go
        (0x77, 2, True, True),  # a code past the RFC's: UNKNOWN
    ],
)
def test_an_rst_stream_gives_the_grpc_status_grpc_gives_the_call(
    rst_code, grpc_code, server_error, client_error
):
    conn, client = Http2Connection(), Peer()
    request = client.headers(1, GRPC_REQUEST) + data(1, b"\0\0\0\0\0", True)
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + request, 1)
    (stream,) = feed(conn, Side.TO_SERVER, RstStreamFrame(1, error_code=rst_code).serialize(), 2)
    assert (stream.reset, stream.reset_code) == (True, rst_code)
    server_span, client_span = grpc_span(stream, SERVER), grpc_span(stream, CLIENT)
    for span, is_error in ((server_span, server_error), (client_span, client_error)):
        assert span.is_error is is_error
        assert span.attributes[RPC_GRPC_STATUS_CODE] == grpc_code
        assert span.metric_attributes[RPC_GRPC_STATUS_CODE] == grpc_code
        assert span.attributes.get(ERROR_TYPE) == (str(grpc_code) if is_error else None)


def test_a_grpc_call_its_connection_closed_on_is_an_error_without_a_status():
    conn, client = Http2Connection(), Peer()
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.headers(1, GRPC_REQUEST), 1)
    (stream,) = conn.close(5)
    span = grpc_span(stream, SERVER)
    assert (stream.reset, stream.reset_code, span.is_error) == (True, None, True)
    assert RPC_GRPC_STATUS_CODE not in span.attributes
    assert span.attributes[ERROR_TYPE] == "connection_closed"


def test_a_grpc_status_read_before_a_reset_wins():
    conn, client, server = Http2Connection(), Peer(), Peer()
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.headers(1, GRPC_REQUEST), 1)
    feed(conn, Side.TO_CLIENT, server.headers(1, [(":status", "200"), ("grpc-status", "5")]), 2)
    (stream,) = feed(conn, Side.TO_CLIENT, RstStreamFrame(1, error_code=8).serialize(), 3)
    assert grpc_span(stream, SERVER).attributes[RPC_GRPC_STATUS_CODE] == 5


@pytest.mark.parametrize(
    ("rst_code", "error_type", "server_error"),
    [
        (0x8, "CANCEL", False),  # the client gave up (a browser navigating away): its doing
        (0x2, "INTERNAL_ERROR", True),
    ],
)
def test_a_plain_http2_stream_reset_before_a_response_failed(rst_code, error_type, server_error):
    """error.type on both sides; ERROR on the client's span, and on the server's unless the
    client cancelled, as gRPC's CANCELLED is no server error either."""
    conn, client = Http2Connection(), Peer()
    request = [(":method", "GET"), (":scheme", "http"), (":path", "/slow"), (":authority", "h")]
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.headers(1, request, True), 1)
    (stream,) = feed(conn, Side.TO_SERVER, RstStreamFrame(1, error_code=rst_code).serialize(), 2)
    for role, is_error in ((SERVER, server_error), (CLIENT, True)):
        span = http2_span(stream, role, SpanOptions())
        assert span.is_error is is_error
        assert span.attributes[ERROR_TYPE] == error_type
        assert span.metric_attributes[ERROR_TYPE] == error_type
        assert HTTP_RESPONSE_STATUS_CODE not in span.attributes


def test_a_plain_http2_stream_its_connection_closed_on_failed():
    conn, client = Http2Connection(), Peer()
    request = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "h")]
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.headers(1, request, True), 1)
    (stream,) = conn.close(2)
    span = http2_span(stream, SERVER, SpanOptions())
    assert (span.is_error, span.attributes[ERROR_TYPE]) == (True, "connection_closed")


def test_a_plain_http2_stream_reset_after_its_response_keeps_the_status_rules():
    conn, client, server = Http2Connection(), Peer(), Peer()
    request = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "h")]
    feed(conn, Side.TO_SERVER, CLIENT_PREFACE + client.headers(1, request, True), 1)
    feed(conn, Side.TO_CLIENT, server.headers(1, [(":status", "200")]), 2)
    (stream,) = feed(conn, Side.TO_SERVER, RstStreamFrame(1, error_code=8).serialize(), 3)
    span = http2_span(stream, SERVER, SpanOptions())
    assert (span.is_error, span.attributes[HTTP_RESPONSE_STATUS_CODE]) == (False, 200)
    assert ERROR_TYPE not in span.attributes
