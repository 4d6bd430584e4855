"""The probes: compile bpf/agent.c with bcc, attach it, and talk to its maps.

The only module that touches bcc. It hands raw ring-buffer records to the decode stage and
exposes the few operations the agent needs on the kernel side: which processes and ports are
traced, seeding connections found in /proc, reading loss counters, and the idle-flush sweep.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from otelbpf.abi import (
    AGENT_SOURCE,
    COUNTER_MAX,
    FLUSH_QUEUE_SIZE,
    TASK_COMM_LEN,
    AbiLayout,
    Counter,
    Endpoint,
    ExchangeFlag,
    FlushRequest,
    Phase,
    Role,
    Setting,
    conn_key,
)
from otelbpf.errors import SetupError
from otelbpf.preflight import import_bcc
from otelbpf.probes.features import ProbeMode
from otelbpf.probes.tls import TlsHooks

log = logging.getLogger(__name__)

# Syscall -> (entry program, exit program or None), by the name bpf/sockets.c gives them.
# Programs are shared where the syscalls share an argument layout.
SYSCALL_PROGRAMS: dict[str, tuple[str, str | None]] = {
    "read": ("read", "io"),
    "recvfrom": ("recvfrom", "io"),
    "readv": ("readv", "io"),
    "recvmsg": ("recvmsg", "io"),
    "write": ("write", "io"),
    "sendto": ("sendto", "io"),
    "writev": ("writev", "io"),
    "sendmsg": ("sendmsg", "io"),
    "sendfile64": ("sendfile64", "io"),
    "socket": ("socket", "socket"),
    "bind": ("bind", None),
    "connect": ("connect", "connect"),
    "accept": ("accept", "accept"),
    "accept4": ("accept", "accept"),
    "close": ("close", None),
    "getppid": ("getppid", None),  # the agent's flush trigger
    "mmap": ("mmap", None),  # code mapped by a traced process: look for TLS libraries
}
LIFECYCLE_TRACEPOINTS = {
    "task:task_newtask": "on_task_newtask",
    "sched:sched_process_exec": "on_sched_process_exec",
    "sched:sched_process_exit": "on_sched_process_exit",
}


@dataclass(frozen=True)
class ProbeSettings:
    layout: AbiLayout
    max_connections: int = 16384
    ringbuf_bytes: int = 8 << 20
    wakeup_batch: int = 64
    idle_flush_ns: int = 500_000_000

    @property
    def ringbuf_pages(self) -> int:
        pages = max(1, self.ringbuf_bytes // os.sysconf("SC_PAGE_SIZE"))
        return 1 << (pages.bit_length() - 1)  # a power of two, as the ring buffer requires

    def cflags(self, agent_pid: int) -> list[str]:
        return [
            f"-I{AGENT_SOURCE.parent}",
            f"-DAGENT_TGID={agent_pid}",
            f"-DMAX_CONNS={self.max_connections}",
            f"-DRINGBUF_PAGES={self.ringbuf_pages}",
            f"-DWAKEUP_BATCH={self.wakeup_batch}",
            "-Wno-unused-function",
            *self.layout.cflags,
        ]


def compile_program(settings: ProbeSettings, agent_pid: int | None = None) -> object:
    bcc = import_bcc()
    pid = os.getpid() if agent_pid is None else agent_pid
    try:
        return bcc.BPF(src_file=str(AGENT_SOURCE).encode(), cflags=settings.cflags(pid))
    except Exception as error:  # bcc raises bare Exception with clang's output on stderr
        raise SetupError(
            f"bcc could not compile {AGENT_SOURCE}: {error}",
            "check that kernel headers are installed (see the README's set-up command) and "
            "that BCC_KERNEL_SOURCE, if set, points at a headers tree",
        ) from None


class SocketProbes:
    def __init__(self, settings: ProbeSettings, mode: ProbeMode) -> None:
        self.settings = settings
        self.mode = mode
        self.bpf = compile_program(settings)
        self._bcc = import_bcc()
        self.attached: list[str] = []
        self._conns = self.bpf["conns"]
        self._allowed = self.bpf["allowed_pids"]
        self._settings_map = self.bpf["settings"]
        self.tls = TlsHooks(self.bpf)
        self.set_idle_flush_ns(settings.idle_flush_ns)

    # -------------------------------------------------------------- attach / detach

    def attach(self) -> None:
        started = time.monotonic()
        for syscall, (entry, exit_) in SYSCALL_PROGRAMS.items():
            if self.mode is ProbeMode.TRACEPOINT:
                self._attach_tracepoint(f"syscalls:sys_enter_{syscall}", f"tp_enter_{entry}")
                if exit_:
                    self._attach_tracepoint(f"syscalls:sys_exit_{syscall}", f"tp_exit_{exit_}")
            else:
                fn = self.bpf.get_syscall_fnname(syscall)
                self.bpf.attach_kprobe(event=fn, fn_name=f"syscall__{entry}")
                self.attached.append(f"kprobe:{fn.decode()}")
                if exit_:
                    self.bpf.attach_kretprobe(event=fn, fn_name=f"kret_{exit_}")
                    self.attached.append(f"kretprobe:{fn.decode()}")
        for tracepoint, fn_name in LIFECYCLE_TRACEPOINTS.items():
            self._attach_tracepoint(tracepoint, fn_name)
        log.info(
            "attached %d %s probes in %.2fs",
            len(self.attached),
            self.mode.value,
            time.monotonic() - started,
        )

    def _attach_tracepoint(self, tracepoint: str, fn_name: str) -> None:
        try:
            self.bpf.attach_tracepoint(tp=tracepoint.encode(), fn_name=fn_name.encode())
        except Exception as error:
            raise SetupError(
                f"could not attach {fn_name} to the tracepoint {tracepoint}: {error}",
                "check that tracefs is mounted and this kernel has CONFIG_FTRACE_SYSCALLS",
            ) from None
        self.attached.append(f"tracepoint:{tracepoint}")

    def close(self) -> None:
        """Detach every probe and free the maps.

        Each tracepoint detach waits for the kernel's RCU grace period: about 70 ms each here,
        2.3 s for all 32. Detaching them from parallel threads saved only 0.5 s (the kernel
        serialises them), so it stays simple.
        """
        self.bpf.cleanup()
        self.attached.clear()

    # -------------------------------------------------------------- events

    def open_events(self, on_record: Callable[[bytes], None]) -> None:
        def callback(_ctx: object, data: int, size: int) -> None:
            on_record(ctypes.string_at(data, size))

        self._callback = callback  # bcc keeps only a weak hold on it
        self.bpf["events"].open_ring_buffer(callback)

    def poll(self, timeout_ms: int) -> None:
        """Wait for a forced wake-up or the timeout, then drain whatever is in the ring."""
        self.bpf.ring_buffer_poll(timeout_ms)
        self.bpf.ring_buffer_consume()

    # -------------------------------------------------------------- selection

    def _set(self, index: Setting, value: int) -> None:
        self._settings_map[ctypes.c_int(index)] = ctypes.c_uint64(value)

    def set_idle_flush_ns(self, idle_ns: int) -> None:
        self._set(Setting.IDLE_NS, idle_ns)

    def set_trace_all(self, enabled: bool) -> None:
        self._set(Setting.TRACE_ALL, int(enabled))

    def select_ports(self, ports: Iterable[int]) -> None:
        table = self.bpf["selector_ports"]
        count = 0
        for port in ports:
            table[ctypes.c_uint16(port)] = ctypes.c_uint8(1)
            count += 1
        self._set(Setting.PORT_FILTER, int(count > 0))

    def select_names(self, names: Iterable[str]) -> None:
        """Executable names the kernel matches at exec itself (exact, at most 15 bytes)."""
        table = self.bpf["selector_comms"]
        for name in names:
            key = table.Key()
            key.comm = name.encode()[: TASK_COMM_LEN - 1]
            table[key] = ctypes.c_uint8(1)

    def allow_pid(self, pid: int) -> None:
        self._allowed[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def forget_pid(self, pid: int) -> None:
        with contextlib.suppress(KeyError):
            del self._allowed[ctypes.c_uint32(pid)]

    def is_allowed(self, pid: int) -> bool:
        return self._allowed.get(ctypes.c_uint32(pid)) is not None

    # -------------------------------------------------------------- seeding from /proc

    def seed_listener(self, pid: int, fd: int, family: int, raw: bytes, port: int) -> None:
        self.bpf["bound"][ctypes.c_uint64(conn_key(pid, fd))] = _endpoint(family, raw, port)

    def seed_connection(
        self,
        pid: int,
        fd: int,
        role: Role,
        family: int,
        local: tuple[bytes, int],
        peer: tuple[bytes, int],
        conn_id: int,
    ) -> bool:
        """Track a connection opened before tracing began; False if it is tracked already."""
        key = ctypes.c_uint64(conn_key(pid, fd))
        if self._conns.get(key) is not None:
            return False
        state = self.settings.layout.conn_state()
        state.ev.type = 1
        state.ev.pid = pid
        state.ev.fd = fd
        state.ev.role = role
        state.ev.flags = ExchangeFlag.SEEDED
        state.ev.conn_id = conn_id
        state.ev.local = _endpoint(family, *local)
        state.ev.peer = _endpoint(family, *peer)
        state.phase = Phase.IDLE
        try:
            self._conns[key] = state
        except Exception:  # the map is full: counted in the kernel's way, logged here
            log.debug("conns map full; connection %d/%d not seeded", pid, fd)
            return False
        return True

    def seed_blocked_read(
        self, pid: int, tid: int, nr: int, fd: int, buf: int, iovcnt: int, kind: int
    ) -> None:
        """A thread already inside a read when the probes attached: its exit still counts."""
        table = self.bpf["pending_io"]
        args = table.Leaf()
        args.conn_key = conn_key(pid, fd)
        args.buf = buf
        args.iovcnt = iovcnt
        args.kind = kind
        args.dir = 1  # DIR_INGRESS
        args.nr = nr
        table[table.Key(conn_key(pid, tid))] = args

    def seed_blocked_accept(self, pid: int, tid: int, nr: int, listen_fd: int, addr: int) -> None:
        table = self.bpf["pending_accept"]
        args = table.Leaf()
        args.listen_fd = listen_fd
        args.peer_addr = addr
        args.nr = nr
        table[table.Key(conn_key(pid, tid))] = args

    def mark_h2(self, pid: int, fd: int) -> None:
        """This connection speaks HTTP/2 (found by its frames): send its bytes as chunks."""
        self.bpf["h2_marks"][ctypes.c_uint64(conn_key(pid, fd))] = ctypes.c_uint8(1)

    # -------------------------------------------------------------- counters and sweep

    def counters(self) -> dict[Counter, int]:
        table = self.bpf["counters"]
        totals = {}
        for index in range(COUNTER_MAX):
            totals[Counter(index)] = sum(table[ctypes.c_int(index)])
        return totals

    def answered_keys(self) -> list[int]:
        """Connections whose exchange has its answer (the idle sweep's candidates)."""
        return self._map_keys(self.bpf["answered"])

    def connection_keys(self) -> list[int]:
        """Every tracked connection's key, without reading the (big) values: a batch read
        would allocate max_entries values (16384 x 2.8 KiB) on every call."""
        return [key.value for key in self._conns.keys()]  # noqa: SIM118 (a bcc table)

    @staticmethod
    def _map_keys(table: object) -> list[int]:
        try:
            keys = [key for key, _ in table.items_lookup_batch()]
        except Exception:  # kernels without batch lookups: one key at a time
            keys = list(table.keys())  # noqa: SIM118 (a bcc table)
        # batch lookups give plain ints, iteration gives ctypes keys
        return [getattr(key, "value", key) for key in keys]

    def flush(self, requests: list[tuple[int, bool]]) -> None:
        """Ask the kernel to emit these connections' exchanges; it checks idleness itself."""
        queue = self.bpf["flush_queue"]
        for start in range(0, len(requests), FLUSH_QUEUE_SIZE):
            batch = requests[start : start + FLUSH_QUEUE_SIZE]
            for index, (key, force) in enumerate(batch):
                queue[ctypes.c_int(index)] = FlushRequest(key, int(force))
            self._set(Setting.FLUSH_COUNT, len(batch))
            os.getppid()  # the trigger: sys_enter_getppid runs flush_trigger() for our pid
        self._set(Setting.FLUSH_COUNT, 0)

    def forget_connections(self, keys: Iterable[int]) -> None:
        for key in keys:
            with contextlib.suppress(KeyError):
                del self._conns[ctypes.c_uint64(key)]


def _endpoint(family: int, raw: bytes, port: int) -> Endpoint:
    endpoint = Endpoint()
    ctypes.memmove(endpoint.addr, raw[:16], min(16, len(raw)))
    endpoint.port = port
    endpoint.family = family
    return endpoint
