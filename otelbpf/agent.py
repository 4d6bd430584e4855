"""The composition root: wires the pipe's stages and owns start-up and shutdown.

    kernel probes -> ring buffer -> decode -> connections -> protocols -> export
    (probes/: sockets      (decode)      (connections)  (protocols/,   (export/)
     and TLS uprobes)                                    streams)

One thread runs the pipe: it polls the ring buffer, decodes each record, routes exchanges
through the stages and sweeps idle connections. The SDK's batch span processor and the
metrics pump export on threads of their own.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from otelbpf import preflight
from otelbpf.abi import FLUSH_NO_SLOT, AbiLayout, EventType, ExchangeFlag, Role
from otelbpf.clock import MonotonicToWall
from otelbpf.config import DEFAULT_NICE
from otelbpf.connections import AddressBook, ExistingConnections, OwnTraffic
from otelbpf.decode import AddressNotice, AgentConnectNotice, Decoder, H2Chunk, ProcessNotice
from otelbpf.exchange import Exchange, Protocol, SocketAddress
from otelbpf.export import destinations
from otelbpf.export.console import ConsoleLineExporter
from otelbpf.export.http_spans import HttpSpanMemo, SpanOptions
from otelbpf.export.span_batches import SpanBatcher
from otelbpf.export.stream_spans import grpc_span, http2_span, is_grpc
from otelbpf.export.telemetry import Telemetry
from otelbpf.protocols.classify import classify, is_tls_handshake
from otelbpf.resources import ResourceDetector
from otelbpf.selection import ProcessSelector, Selectors
from otelbpf.stats import AgentStats
from otelbpf.streams import Finished, Http2Streams
from otelbpf.tlswatch import TlsWatcher

if TYPE_CHECKING:
    from otelbpf.probes.loader import ProbeSettings

log = logging.getLogger("otelbpf")

# how late a quiet period's events are read: what must be read at once (an address lookup
# for an accept with no address buffer, the agent's own connect) forces a wake-up in the kernel
POLL_TIMEOUT_MS = 100
COUNTER_REFRESH_S = 1.0
GONE_SCAN_S = 10.0  # look for connections of processes that vanished unnoticed
_NO_RESPONSE_BIT = int(ExchangeFlag.NO_RESPONSE)
_SERVER_ROLE = Role.SERVER
GC_YOUNG_THRESHOLD = 20000  # allocations between young collections (Python's default: 700)


@dataclass(frozen=True)
class AgentConfig:
    selectors: Selectors = field(default_factory=Selectors)
    probe_mode: str | None = None  # None: chosen by probing the kernel
    endpoint: str | None = None
    protocol: str | None = None
    request_head_size: int = 1024
    response_head_size: int = 512
    idle_flush_ms: int = 500
    max_connections: int = 16384
    ringbuf_bytes: int = 8 << 20
    keep_query_values: bool = False
    keep_command_line: bool = False  # process.command_line: arguments may hold credentials
    metric_export_interval_ms: int | None = None
    tls: bool = True  # hook TLS libraries for plaintext
    nice: int | None = DEFAULT_NICE  # None: left as inherited


def probe_settings(
    config: AgentConfig, io_args_at_exit: bool = False, socket_tracepoints: bool = False
) -> ProbeSettings:
    """What the BPF programs are compiled and loaded with, for this configuration."""
    from otelbpf.probes.loader import ProbeSettings  # after the preflight: it needs bcc's paths

    return ProbeSettings(
        layout=AbiLayout(config.request_head_size, config.response_head_size),
        max_connections=config.max_connections,
        ringbuf_bytes=config.ringbuf_bytes,
        idle_flush_ns=config.idle_flush_ms * 1_000_000,
        io_args_at_exit=io_args_at_exit,
        socket_tracepoints=socket_tracepoints,
    )


def settle_garbage_collector() -> None:
    """Once set up, keep the cyclic collector off the start-up objects and the request path.

    Every exchange allocates a few dozen short-lived container objects, freed by reference
    counting; the cyclic collector still ran a young collection every 700 of them, and full
    ones over every object the SDK, bcc, protobuf and grpc had loaded (a few hundred
    thousand). Freezing what exists after start-up takes those out of every collection, and
    a larger young generation collects a twentieth as often: the agent's CPU per request at
    4000 req/s went from 53 to 47 us (bench, nginx)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.stats = AgentStats()
        self._stop = threading.Event()
        self._records: list[bytes] = []
        self._exited: dict[int, int] = {}  # pid -> wall-clock ns its exit was read at
        self._next_gone_scan = 0.0
        self._warned_tls: set[int] = set()
        self.probes = None
        self.telemetry: Telemetry | None = None
        self.tracing_started_at: float | None = None

    # -------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        started = time.monotonic()
        preflight.run_all()
        # the probes need the preflight's tracefs and headers: imported here, after it
        from otelbpf.probes.features import ProbeMode, choose_probe_mode, io_args_at_exit
        from otelbpf.probes.loader import SocketProbes

        config = self.config
        selector = ProcessSelector(config.selectors)
        initial_pids = selector.initial_pids()  # a bad --pid fails before anything is loaded
        choice = choose_probe_mode(config.probe_mode)
        log.info("probe mode: %s (%s)", choice.mode.value, choice.reason)
        io_args = io_args_at_exit(choice.mode)
        log.info("read and write arguments: %s", io_args.reason)

        settings = probe_settings(config, io_args.at_exit, choice.mode is ProbeMode.SOCKET)
        layout = settings.layout
        self.telemetry = self._build_telemetry()
        self.probes = probes = SocketProbes(settings, choice.mode)
        probes.preload(tls=config.tls)  # the verifier runs while the rest starts
        decoder = Decoder(layout, MonotonicToWall())
        self._seeder = ExistingConnections(probes)
        self._own = OwnTraffic()
        self._own_h2_connections: set[int] = set()  # conn_ids of gRPC exports, counted
        self._addresses = AddressBook()
        self._selector = selector
        self._span_options = SpanOptions(keep_query_values=config.keep_query_values)
        self._http_spans = HttpSpanMemo(self._span_options)
        self.tls = TlsWatcher(
            probes.tls.attach if config.tls else None,
            watch_loader=probes.hook_loader if config.tls and probes.hooks_loaders else None,
        )
        self.h2 = Http2Streams(probes.mark_h2, config.max_connections, self.stats.skipped)
        probes.open_events(self._records.append)
        try:
            probes.attach()
            probes.set_trace_all(config.selectors.trace_all)
            probes.select_ports(config.selectors.ports)
            probes.select_names(config.selectors.exact_names)
            for pid in initial_pids:
                probes.allow_pid(pid)
            targets = self._seed_targets(initial_pids)
            seeded = sum(self._seeder.seed(pid) for pid in targets)
            if config.tls:
                self.tls.hook_system_libraries()
            for pid in targets:
                self.tls.scan(pid)
            self._lower_priority()  # after the compile: start-up keeps its full share
            self.tracing_started_at = time.monotonic()
            log.info(
                "tracing %s; %d existing connections seeded; started in %.2fs",
                "every process" if config.selectors.trace_all else f"{len(initial_pids)} processes",
                seeded,
                self.tracing_started_at - started,
            )
            self.telemetry.start()
            settle_garbage_collector()
            self._loop(decoder)
        finally:
            self._shutdown(decoder)
        return 0

    def _lower_priority(self) -> None:
        """Yield the CPU to the traced services (the issue's rule: under overload the agent
        drops and counts, it does not slow them). Linux keeps niceness per thread: every
        thread that exists now is set, and threads started later inherit it."""
        if self.config.nice is None:
            return
        nice = min(19, max(-20, self.config.nice))
        for tid in os.listdir("/proc/self/task"):
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            except ProcessLookupError:
                continue  # a thread that just ended
            except OSError as error:
                log.warning("could not set niceness %d: %s", nice, error)
                return

    def _seed_targets(self, initial_pids: set[int]) -> set[int]:
        if not self.config.selectors.trace_all:
            return initial_pids
        from otelbpf import procfs

        return {pid for pid in procfs.all_pids() if pid != os.getpid()}

    def _build_telemetry(self) -> Telemetry:
        traces = destinations.resolve("traces", self.config.endpoint, self.config.protocol)
        metrics = destinations.resolve("metrics", self.config.endpoint, self.config.protocol)
        log.info(
            "%s; %s",
            destinations.describe(traces, "traces"),
            destinations.describe(metrics, "metrics"),
        )
        span_exporter = (
            destinations.span_exporter(traces) if traces is not None else ConsoleLineExporter()
        )
        metric_exporter = destinations.metric_exporter(metrics) if metrics is not None else None
        detector = ResourceDetector(keep_command_line=self.config.keep_command_line)
        batcher = SpanBatcher(span_exporter)
        self.stats.export_losses = lambda: (batcher.dropped, batcher.failed)
        telemetry = Telemetry(
            batcher,
            metric_exporter,
            detector.for_process,
            export_interval_ms=self.config.metric_export_interval_ms,
        )
        agent_meters = telemetry.meter_provider(detector.for_agent())
        if agent_meters is not None:
            self.stats.register(agent_meters.get_meter("otelbpf"))
        return telemetry

    def _loop(self, decoder: Decoder) -> None:
        probes = self.probes
        idle_s = self.config.idle_flush_ms / 1000
        next_sweep = time.monotonic() + idle_s / 2
        next_counters = time.monotonic() + COUNTER_REFRESH_S
        while not self._stop.is_set():
            probes.poll(POLL_TIMEOUT_MS)
            self._drain(decoder)
            now = time.monotonic()
            try:
                self.tls.run_due()
                if now >= next_sweep:
                    self._sweep(force_all=False)
                    next_sweep = now + idle_s / 2
                if now >= next_counters:
                    self.stats.kernel.update(probes.counters())
                    next_counters = now + COUNTER_REFRESH_S
            except Exception:  # a bug of ours must not stop tracing: say it, count it, go on
                self.stats.internal_errors += 1
                log.exception("internal error in the agent's housekeeping (tracing goes on)")

    def _shutdown(self, decoder: Decoder) -> None:
        probes = self.probes
        if probes is not None:
            try:
                # every answered exchange still in the kernel goes out, idle or not
                probes.set_idle_flush_ns(0)
                self._sweep(force_all=True)
                probes.poll(0)
                self._drain(decoder)
                self.stats.kernel.update(probes.counters())
            finally:
                probes.close()
                self.tls.remove_status()
        if self.telemetry is not None:
            self.telemetry.shutdown()
        log.info("stopped: %s", self.stats.summary())

    # -------------------------------------------------------------- the pipe

    def _drain(self, decoder: Decoder) -> None:
        records, self._records[:] = list(self._records), []
        for record in records:
            try:
                item = decoder.decode(record)
                if type(item) is Exchange:  # the common record first
                    if self._needs_addresses(item.role, item.local, item.peer):
                        item.local, item.peer = self._addresses.fill(
                            item.conn_id, item.local, item.peer, item.pid, item.fd
                        )
                    self._on_exchange(item)
                elif isinstance(item, H2Chunk):
                    if self._needs_addresses(item.role, item.local, item.peer):
                        local, peer = self._addresses.fill(
                            item.conn_id, item.local, item.peer, item.pid, item.fd
                        )
                        item = dataclasses.replace(item, local=local, peer=peer)
                    if self._own.serves_own(item.role, item.local, item.peer):
                        self._own_h2_chunk(item.conn_id)
                    else:
                        self._on_streams(self.h2.on_chunk(item))
                elif isinstance(item, AddressNotice):
                    self._addresses.learn(item.pid, item.fd, item.conn_id)
                elif isinstance(item, AgentConnectNotice):
                    self._own.expect_new_socket()
                elif isinstance(item, ProcessNotice):
                    self._on_process(item)
                else:
                    self.stats.bad_records += 1
            except Exception:  # one bad record costs that record, never the agent
                self._internal_error("a record")

    def _own_h2_chunk(self, conn_id: int) -> None:
        """The agent's gRPC exports, served by a traced collector: dropped, and counted once
        per connection (as own_traffic, as an HTTP/1 export's exchange is)."""
        if conn_id in self._own_h2_connections:
            return
        if len(self._own_h2_connections) >= 4096:  # bounded: a recount costs nothing
            self._own_h2_connections.clear()
        self._own_h2_connections.add(conn_id)
        self.stats.skipped("own_traffic")

    @staticmethod
    def _needs_addresses(
        role: Role, local: SocketAddress | None, peer: SocketAddress | None
    ) -> bool:
        # a client span needs only its peer; a server span, the peer and its own port
        return peer is None or (local is None and role is _SERVER_ROLE)

    def _on_exchange(self, exchange: Exchange) -> None:
        stats = self.stats
        stats.exchanges += 1
        if self._own.is_own(exchange):
            stats.skipped("own_traffic")
            return
        if self.h2.knows(exchange.conn_id):
            # paired before the kernel switched this older connection to HTTP/2 chunks
            stats.skipped("http2_joined")
            self._on_streams(self.h2.adopt(exchange) or [])
            return
        protocol = classify(exchange)
        if protocol is Protocol.HTTP1:
            if int(exchange.flags) & _NO_RESPONSE_BIT:  # an int's & skips the enum machinery
                stats.skipped("unanswered")  # closed, or the process gone, before an answer
                return
            span = self._http_spans.describe(exchange)
            self.telemetry.record(exchange.pid, exchange.comm, span)
            stats.spans += 1
        elif protocol is Protocol.TLS:
            if is_tls_handshake(exchange.request_head):
                stats.skipped("tls_handshake")  # a connection being set up, hooked or not
                return
            stats.skipped("encrypted")
            self.tls.count_unhooked(exchange.pid)
            if exchange.pid not in self._warned_tls:
                self._warned_tls.add(exchange.pid)
                log.info(
                    "pid %d (%s) sends TLS that no library hook decrypts: counted, not traced",
                    exchange.pid,
                    exchange.comm,
                )
        else:
            streams = self.h2.adopt(exchange)
            if streams is None:
                stats.skipped("unparsed")
            else:
                stats.skipped("http2_joined")  # its streams are counted as spans
                self._on_streams(streams)

    def _on_streams(self, streams: Finished) -> None:
        # a close or GOAWAY finishes every open stream at once: one that breaks the span
        # builder costs that stream, not the others
        for stream, conn in streams:
            try:
                if is_grpc(stream):
                    span = grpc_span(stream, conn)
                else:
                    span = http2_span(stream, conn, self._span_options)
                self.telemetry.record(conn.pid, conn.comm, span)
                self.stats.spans += 1
            except Exception:
                self._internal_error("an HTTP/2 stream")

    def _internal_error(self, on_what: str) -> None:
        """Count a bug of ours met on one item, in an except block; the first ten are logged."""
        self.stats.internal_errors += 1
        if self.stats.internal_errors <= 10:
            log.exception("internal error on %s (counted; tracing goes on)", on_what)

    def _on_process(self, notice: ProcessNotice) -> None:
        probes = self.probes
        if notice.kind is EventType.EXEC:
            self.telemetry.forget(notice.pid)  # a new program: describe it afresh
            traced = self.config.selectors.trace_all or probes.is_allowed(notice.pid)
            if self._selector.process_matches_exe(notice.pid, notice.filename):
                probes.allow_pid(notice.pid)
                self._seeder.seed(notice.pid)
                traced = True
                log.debug("exec of %s (pid %d) matches --exe", notice.filename, notice.pid)
            if traced:
                # describe the process while it lives: a short one is gone when its spans go
                self.telemetry.process(notice.pid, notice.comm)
                # the program itself (OpenSSL linked in, Go) right after this batch of events;
                # the libraries the dynamic loader maps next come as MMAP_EXEC notices (of
                # mmap() or of the loader's own hook), or are hooked already
                self.tls.schedule(notice.pid)
        elif notice.kind is EventType.MMAP_EXEC:
            self.tls.schedule(notice.pid)
        elif notice.kind is EventType.FORK:
            self.telemetry.forget(notice.pid)
            self._seeder.seed(notice.pid)  # inherited listening sockets
        elif notice.kind is EventType.EXIT:
            self._exited[notice.pid] = time.time_ns()
            self.tls.forget(notice.pid)
            self._warned_tls.discard(notice.pid)

    def _sweep(self, force_all: bool) -> None:
        """Flush idle exchanges, and everything of processes that are gone, in the kernel.

        Candidates come from the kernel's answered marks; the kernel itself checks which are
        idle. Every GONE_SCAN_S, and after exits, every connection is looked at: those of
        processes that exited (the kernel closes their sockets without a close() call) are
        flushed and forgotten, the others checked for idleness too, which catches an answered
        exchange whose mark a later connection took (two connections in one slot). The HTTP/2
        parsers of gone processes go too, their open streams reported as a close reports them.
        """
        probes = self.probes
        self._own.recheck()
        requests = [(key, False, slot) for key, slot in probes.answered_marks()]
        gone_keys: list[int] = []
        now = time.monotonic()
        if force_all or self._exited or now >= self._next_gone_scan:
            self._next_gone_scan = now + GONE_SCAN_S
            alive: dict[int, bool] = {}  # each pid looked up once a scan

            def is_alive(pid: int) -> bool:
                known = alive.get(pid)
                if known is None:
                    known = alive[pid] = pid not in self._exited and os.path.exists(f"/proc/{pid}")
                return known

            for key in probes.connection_keys():
                if not is_alive(key >> 32):
                    gone_keys.append(key)
                    requests.append((key, True, FLUSH_NO_SLOT))
                else:
                    requests.append((key, False, FLUSH_NO_SLOT))
            for pid in [pid for pid, known in alive.items() if not known]:
                probes.forget_pid(pid)
            for pid in self.h2.pids():
                if not is_alive(pid):
                    ended = self._exited.get(pid) or time.time_ns()
                    self._on_streams(self.h2.forget_pid(pid, ended))
            self._exited.clear()
        if requests:
            probes.flush(requests)
        if gone_keys:
            probes.forget_connections(gone_keys)


def install_signal_handlers(agent: Agent) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: flushing and stopping", signal.Signals(signum).name)
        agent.stop()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


__all__ = ["Agent", "AgentConfig", "install_signal_handlers"]
