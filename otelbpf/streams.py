"""Stream stage: HTTP/2 connections' chunks in, finished streams (with their connection) out.

The kernel sends an HTTP/2 connection's bytes in order once it saw the client preface. A
connection older than the agent shows up first as ordinary exchanges whose heads are HTTP/2
frames: this stage recognises them, asks the kernel to switch that connection to chunks, and
feeds the heads it already has to a parser that knows it joined mid-connection.

Parsers are kept for at most max_connections connections (the kernel's own bound); past it the
least recently used goes, its open streams finished as its close would have finished them,
and counted (`http2_evicted`); should that connection speak again, a new parser takes it as
joined mid-connection. A process that exits takes its connections' parsers with it
(forget_pid). Open streams dropped by a parser for want of room are counted (`http2_stale`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from otelbpf.decode import H2Chunk
from otelbpf.exchange import Exchange
from otelbpf.export.stream_spans import StreamConnection
from otelbpf.protocols.http2 import Http2Connection, Side, Stream, looks_like_http2

Finished = list[tuple[Stream, StreamConnection]]
EVICTED = "http2_evicted"  # a connection's parser dropped for room, open calls and all
STALE = "http2_stale"  # an open stream a parser dropped for room (its end never seen)


def _not_counted(_reason: str) -> None:
    return None


class Http2Streams:
    def __init__(
        self,
        mark_h2: Callable[[int, int], None],
        max_connections: int = 16384,
        count: Callable[[str], None] = _not_counted,
    ) -> None:
        """count: told each loss by its reason (EVICTED, STALE); the agent's stats.skipped."""
        self._mark_h2 = mark_h2
        self._max = max(1, max_connections)
        self._count = count
        self._connections: OrderedDict[int, tuple[Http2Connection, StreamConnection]] = (
            OrderedDict()
        )
        self._by_pid: dict[int, set[int]] = {}  # conn_ids of each process's connections
        self._evicted: dict[int, None] = {}  # conn_ids evicted (oldest first), bounded
        self.streams = 0
        self.partial_streams = 0

    def _connection(
        self, conn_id: int, conn: StreamConnection, joined: bool, ts_ns: int
    ) -> tuple[Http2Connection, Finished | None]:
        """The connection's parser, and the open streams of connections evicted for it."""
        found = self._connections.get(conn_id)
        if found is not None:
            self._connections.move_to_end(conn_id)
            return found[0], None
        if conn_id in self._evicted:
            del self._evicted[conn_id]
            joined = True  # its HPACK tables went with the evicted parser
        parser = Http2Connection(joined_mid_connection=joined, on_stale=self._stale)
        self._connections[conn_id] = (parser, conn)
        self._by_pid.setdefault(conn.pid, set()).add(conn_id)
        evicted: Finished | None = None
        while len(self._connections) > self._max:
            old_id, (old_parser, old_conn) = self._connections.popitem(last=False)
            self._unlink(old_id, old_conn.pid)
            self._count(EVICTED)
            if len(self._evicted) >= self._max:
                del self._evicted[next(iter(self._evicted))]
            self._evicted[old_id] = None
            evicted = (evicted or []) + self._finished(old_parser.close(ts_ns), old_conn)
        return parser, evicted

    def _stale(self) -> None:
        self._count(STALE)

    def _unlink(self, conn_id: int, pid: int) -> None:
        ids = self._by_pid.get(pid)
        if ids is not None:
            ids.discard(conn_id)
            if not ids:
                del self._by_pid[pid]

    def pids(self) -> list[int]:
        """The processes whose connections have parsers."""
        return list(self._by_pid)

    def forget_pid(self, pid: int, ts_ns: int) -> Finished:
        """The process is gone: its connections' parsers go, their open streams end at ts_ns
        as a close ends them."""
        out: Finished = []
        for conn_id in self._by_pid.pop(pid, ()):
            found = self._connections.pop(conn_id, None)
            if found is not None:
                out += self._finished(found[0].close(ts_ns), found[1])
        return out

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
                self._evicted.pop(chunk.conn_id, None)
                return []
            parser, known = found
            self._unlink(chunk.conn_id, known.pid)
            return self._finished(parser.close(chunk.ts_ns), known)
        parser, evicted = self._connection(chunk.conn_id, conn, False, chunk.ts_ns)
        side = Side.TO_SERVER if chunk.to_server else Side.TO_CLIENT
        finished = parser.receive(
            side, chunk.data, chunk.total_len, chunk.ts_ns, chunk.elided, chunk.walk_lost
        )
        if evicted:
            return evicted + self._finished(finished, conn)
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
        parser, evicted = self._connection(exchange.conn_id, conn, True, exchange.start_ns)
        finished = parser.receive(
            Side.TO_SERVER, exchange.request_head, exchange.request_bytes, exchange.start_ns
        )
        finished += parser.receive(
            Side.TO_CLIENT, exchange.response_head, exchange.response_bytes, exchange.end_ns
        )
        if evicted:
            return evicted + self._finished(finished, conn)
        return self._finished(finished, conn)
