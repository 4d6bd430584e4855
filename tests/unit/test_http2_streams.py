"""The stream stage's bookkeeping: connections evicted for room, processes that exit."""

from __future__ import annotations

from opentelemetry.semconv._incubating.attributes.rpc_attributes import RPC_METHOD
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE

from otelbpf.abi import EventType, Role
from otelbpf.agent import Agent, AgentConfig
from otelbpf.decode import H2Chunk, ProcessNotice
from otelbpf.exchange import SocketAddress
from otelbpf.protocols.http2 import CLIENT_PREFACE, MAX_OPEN_STREAMS
from otelbpf.stats import AgentStats
from otelbpf.streams import Http2Streams
from tests.unit.test_http2 import GRPC_REQUEST, Peer, grpc_call


def chunk(
    conn_id: int, data: bytes, to_server: bool, pid: int = 1, ts: int = 1, closed: bool = False
) -> H2Chunk:
    return H2Chunk(
        pid=pid,
        tid=pid,
        fd=conn_id,
        conn_id=conn_id,
        role=Role.SERVER,
        to_server=to_server,
        ts_ns=ts,
        total_len=len(data),
        data=data,
        tls=False,
        closed=closed,
        elided=False,
        walk_lost=False,
        local=SocketAddress("127.0.0.1", 50051),
        peer=SocketAddress("127.0.0.1", 40000),
        comm="srv",
    )


def open_call(h2: Http2Streams, conn_id: int, client: Peer, pid: int = 1, ts: int = 1) -> list:
    return h2.on_chunk(
        chunk(conn_id, CLIENT_PREFACE + client.headers(1, GRPC_REQUEST), True, pid, ts)
    )


def test_an_evicted_connection_finishes_its_open_calls_and_is_counted():
    stats = AgentStats()
    h2 = Http2Streams(lambda pid, fd: None, max_connections=2, count=stats.skipped)
    peers = {conn_id: (Peer(), Peer()) for conn_id in (1, 2, 3)}
    assert open_call(h2, 1, peers[1][0], ts=10) == []
    assert open_call(h2, 2, peers[2][0], ts=20) == []
    # a third connection: the least recently used (1) goes, and its call with it
    ((stream, conn),) = open_call(h2, 3, peers[3][0], ts=30)
    assert (conn.conn_id, stream.stream_id, stream.reset, stream.end_ns) == (1, 1, True, 30)
    assert (h2.streams, stats.outcomes["http2_evicted"]) == (1, 1)
    assert "1 http2_evicted" in stats.summary()
    # connection 1 speaks again: its HPACK tables are gone, its new parser knows it
    response = grpc_call(peers[1][0], peers[1][1], 1)[1]
    assert h2.on_chunk(chunk(1, response, False, ts=40)) != []  # 2 evicted in turn
    assert h2._connections[1][0].joined is True
    # the others still complete
    ((done, conn),) = h2.on_chunk(chunk(3, grpc_call(peers[3][0], peers[3][1], 1)[1], False))
    assert (conn.conn_id, done.reset, done.trailers) == (3, False, [("grpc-status", "0")])


def test_streams_a_parser_drops_for_room_are_counted():
    stats = AgentStats()
    h2 = Http2Streams(lambda pid, fd: None, count=stats.skipped)
    client = Peer()
    count = MAX_OPEN_STREAMS + 3
    wire = CLIENT_PREFACE + b"".join(client.headers(2 * i + 1, GRPC_REQUEST) for i in range(count))
    h2.on_chunk(chunk(1, wire, True))
    assert stats.outcomes["http2_stale"] == 3


def test_a_gone_processs_connections_are_forgotten_and_their_calls_finished():
    h2 = Http2Streams(lambda pid, fd: None)
    open_call(h2, 1, Peer(), pid=100)
    open_call(h2, 2, Peer(), pid=100)
    open_call(h2, 3, Peer(), pid=200)
    assert sorted(h2.pids()) == [100, 200]
    finished = h2.forget_pid(100, 99)
    assert sorted((c.conn_id, s.reset, s.end_ns) for s, c in finished) == [
        (1, True, 99),
        (2, True, 99),
    ]
    assert (h2.pids(), list(h2._connections)) == ([200], [3])
    assert h2.forget_pid(100, 100) == []
    # a close forgets the pid's connection too
    h2.on_chunk(chunk(3, b"", True, pid=200, closed=True))
    assert h2.pids() == []


class FakeProbes:
    def __init__(self, keys: list[int]) -> None:
        self.keys = keys
        self.forgotten: list[int] = []

    def answered_marks(self) -> list:
        return []

    def connection_keys(self) -> list[int]:
        return self.keys

    def flush(self, requests: list) -> None:
        pass

    def forget_pid(self, pid: int) -> None:
        pass

    def forget_connections(self, keys: list[int]) -> None:
        self.forgotten += keys


class Recorder:
    def __init__(self) -> None:
        self.spans: list = []

    def record(self, pid: int, comm: str, span: object) -> None:
        self.spans.append((pid, span))

    def forget(self, pid: int) -> None:
        pass


class Quiet:
    def recheck(self) -> None:
        pass

    def forget(self, pid: int) -> None:
        pass


def test_the_sweep_reports_the_open_calls_of_a_process_that_exited():
    gone = 2**22 + 12345  # beyond pid_max's default: no such process
    agent = Agent(AgentConfig())
    agent.probes = FakeProbes([(gone << 32) | 7])
    agent._own = agent.tls = Quiet()
    agent.telemetry = recorder = Recorder()
    agent.h2 = Http2Streams(lambda pid, fd: None)
    open_call(agent.h2, 42, Peer(), pid=gone)
    agent._on_process(ProcessNotice(EventType.EXIT, gone, 0, "srv", ""))
    exited_at = agent._exited[gone]
    agent._sweep(force_all=False)
    assert agent.probes.forgotten == [(gone << 32) | 7]
    assert agent.h2.pids() == []
    ((pid, span),) = recorder.spans
    assert (pid, span.attributes[RPC_METHOD], span.end_ns) == (gone, "SayHello", exited_at)
    assert (span.is_error, span.attributes[ERROR_TYPE]) == (True, "connection_closed")
    assert agent.stats.spans == 1


def test_the_periodic_scan_finds_http2_parsers_of_processes_gone_unnoticed():
    gone = 2**22 + 12346
    agent = Agent(AgentConfig())
    agent.probes = FakeProbes([])  # the kernel forgot its connections already
    agent._own = agent.tls = Quiet()
    agent.telemetry = recorder = Recorder()
    agent.h2 = Http2Streams(lambda pid, fd: None)
    open_call(agent.h2, 42, Peer(), pid=gone)
    agent._sweep(force_all=False)  # the first sweep scans
    assert (agent.h2.pids(), len(recorder.spans)) == ([], 1)
