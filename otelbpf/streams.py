"""Stream stage: HTTP/2 connections' chunks in, finished streams (with their connection) out.

The kernel sends an HTTP/2 connection's bytes in order once it saw the client preface. A
connection older than the agent shows up first as ordinary exchanges whose heads are HTTP/2
frames: this stage recognises them, asks the kernel to switch that connection to chunks, and
feeds the heads it already has to a parser that knows it joined mid-connection.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from otelbpf.decode import H2Chunk
from otelbpf.exchange import Exchange
from otelbpf.export.stream_spans import StreamConnection
from otelbpf.protocols.http2 import Http2Connection, Side, Stream, looks_like_http2

Finished = list[tuple[Stream, StreamConnection]]


class Http2Streams:
    def __init__(self, mark_h2: Callable[[int, int], None], max_connections: int = 8192) -> None:
        self._mark_h2 = mark_h2
        self._max = max_connections
        self._connections: OrderedDict[int, tuple[Http2Connection, StreamConnection]] = (
            OrderedDict()
        )
        self.streams = 0
        self.partial_streams = 0

    def _connection(self, conn_id: int, conn: StreamConnection, joined: bool) -> Http2Connection:
        found = self._connections.get(conn_id)
        if found is not None:
            self._connections.move_to_end(conn_id)
            return found[0]
        parser = Http2Connection(joined_mid_connection=joined)
        self._connections[conn_id] = (parser, conn)
        while len(self._connections) > self._max:
            self._connections.popitem(last=False)
        return parser

    def _finished(self, streams: list[Stream], conn: StreamConnection) -> Finished:
        out = [(stream, conn) for stream in streams if stream.request_headers]
        self.streams += len(out)
        self.partial_streams += sum(1 for stream, _ in out if stream.partial)
        return out

    def on_chunk(self, chunk: H2Chunk) -> Finished:
        conn = StreamConnection(
            chunk.pid,
            chunk.tid,
            chunk.fd,
            chunk.conn_id,
            chunk.role,
            chunk.tls,
            chunk.local,
            chunk.peer,
            chunk.comm,
        )
        if chunk.closed:
            found = self._connections.pop(chunk.conn_id, None)
            if found is None:
                return []
            parser, known = found
            return self._finished(parser.close(chunk.ts_ns), known)
        parser = self._connection(chunk.conn_id, conn, joined=False)
        side = Side.TO_SERVER if chunk.to_server else Side.TO_CLIENT
        finished = parser.receive(
            side, chunk.data, chunk.total_len, chunk.ts_ns, chunk.elided, chunk.walk_lost
        )
        return self._finished(finished, conn)

    def knows(self, conn_id: int) -> bool:
        return conn_id in self._connections

    def adopt(self, exchange: Exchange) -> Finished | None:
        """An exchange nothing else parsed: if its bytes are HTTP/2 frames, take the connection
        over. Returns None when it is not HTTP/2. An exchange of a connection taken over
        already was paired before the kernel saw the mark: its bytes follow on."""
        if exchange.conn_id not in self._connections:
            if not looks_like_http2(exchange.request_head, exchange.request_bytes):
                return None
            if exchange.response_head and not looks_like_http2(
                exchange.response_head, exchange.response_bytes
            ):
                return None
            self._mark_h2(exchange.pid, exchange.fd)
        conn = StreamConnection(
            exchange.pid,
            exchange.tid,
            exchange.fd,
            exchange.conn_id,
            exchange.role,
            bool(exchange.flags & exchange.flags.TLS),
            exchange.local,
            exchange.peer,
            exchange.comm,
        )
        parser = self._connection(exchange.conn_id, conn, joined=True)
        finished = parser.receive(
            Side.TO_SERVER, exchange.request_head, exchange.request_bytes, exchange.start_ns
        )
        finished += parser.receive(
            Side.TO_CLIENT, exchange.response_head, exchange.response_bytes, exchange.end_ns
        )
        return self._finished(finished, conn)
