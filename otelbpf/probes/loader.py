"""The probes: bpf/agent.c compiled (or taken from the cache), attached, and its maps.

It hands raw ring-buffer records to the decode stage and exposes the few operations the agent
needs on the kernel side: which processes and ports are traced, seeding connections found in
/proc, reading loss counters, and the idle-flush sweep. bcc itself (its compiler) runs only in
the child process compiled.py starts, and only when the cache has no compiled object.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from otelbpf.abi import (
    BPF_DIR,
    COUNTER_MAX,
    FLUSH_QUEUE_SIZE,
    TASK_COMM_LEN,
    AbiLayout,
    AcceptArgs,
    CommKey,
    Counter,
    Endpoint,
    ExchangeFlag,
    FlushRequest,
    Phase,
    Role,
    Setting,
    SocketFacts,
    ThreadState,
    conn_key,
)
from otelbpf.errors import SetupError
from otelbpf.probes import bpf_calls, compiled, kernel_layout
from otelbpf.probes.answered import AnsweredMarks
from otelbpf.probes.bpf_calls import RingBuffer
from otelbpf.probes.features import SOCKET_TRACEPOINT_PROGRAMS, ProbeMode
from otelbpf.probes.objects import (
    PROG_KPROBE,
    PROG_RAW_TRACEPOINT,
    PROG_TRACEPOINT,
    LoadedObject,
    syscall_function,
)
from otelbpf.probes.ringbuf import MappedRingBuffer
from otelbpf.probes.tls import TlsHooks
from otelbpf.probes.traced_pids import TracedPids

log = logging.getLogger(__name__)

# Syscall -> (entry program, exit program or None), by the name bpf/agent.c gives them.
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
    "getppid": ("getppid", None),  # the agent's flush trigger, where FLUSH_PROGRAM cannot run
    "mmap": ("mmap", None),  # code mapped by a traced process: look for TLS libraries
}
# The flush trigger run on request (BPF_PROG_TEST_RUN) rather than through a hooked getppid():
# one syscall hook fewer, toward none (while any syscall tracepoint has a program, every system
# call of every task takes the kernel's slow path; bench/FINDINGS.md, section 4).
FLUSH_PROGRAM = "run_flush"
# Where no mmap() is hooked, libraries loaded later (dlopen) are told by the dynamic loader.
LOADER_SYMBOL = "_dl_debug_state"
LOADER_PROGRAM = "uprobe_dl_debug_state"
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
    idle_flush_ns: int = 500_000_000
    io_args_at_exit: bool = False  # see features.io_args_at_exit
    socket_tracepoints: bool = False  # ProbeMode.SOCKET: its programs compiled in

    @property
    def wakeup_batch(self) -> int:
        """Events per CPU between two forced wake-ups of the reader (see wakeup_flag in
        agent.c): all CPUs together may leave a quarter of the ring unannounced, counting
        events at 2 KiB (an exchange with full heads is 1.6), between 16 and 1024."""
        per_cpu = self.ringbuf_bytes // (4 * (os.cpu_count() or 1) * 2048)
        return max(16, min(1024, per_cpu))

    @property
    def answered_slots(self) -> int:
        """Slots of the answered marks (see answered in agent.c): a power of two, twice the
        connections, so two live connections share one only when their ids are that far
        apart."""
        return 1 << (2 * self.max_connections - 1).bit_length()

    @property
    def ringbuf_pages(self) -> int:
        pages = max(1, self.ringbuf_bytes // os.sysconf("SC_PAGE_SIZE"))
        return 1 << (pages.bit_length() - 1)  # a power of two, as the ring buffer requires

    @property
    def cflags(self) -> list[str]:
        return [
            f"-I{BPF_DIR}",
            f"-DMAX_CONNS={self.max_connections}",
            f"-DANSWERED_SLOTS={self.answered_slots}",
            f"-DRINGBUF_PAGES={self.ringbuf_pages}",
            f"-DWAKEUP_BATCH={self.wakeup_batch}",
            "-Wno-unused-function",
            *(["-DIO_ARGS_AT_EXIT"] if self.io_args_at_exit or self.socket_tracepoints else []),
            *(["-DSOCK_TRACEPOINTS"] if self.socket_tracepoints else []),
            *self.layout.cflags,
            *kernel_layout.cflags(),
        ]


@dataclass(frozen=True)
class VerifiedPrograms:
    count: int  # distinct programs that passed the verifier
    from_cache: bool
    compile_s: float  # the compile's time, or the cache read's
    cache_path: Path
    tls_rejected: tuple[str, ...]  # TLS uprobe programs the verifier refused


def verify_programs(settings: ProbeSettings, mode: ProbeMode) -> VerifiedPrograms:
    """Compile (or take from the cache) and load every program `run` may, attaching none.

    `otelbpf check` runs it, so that a machine that passes the check is known to pass the
    verifier too, and so that set-up leaves the compiled programs cached for the first run.
    A socket program refused is a SetupError, as `run` makes it; a TLS program refused is
    reported, as `run` goes on without that library's hooks."""
    started = time.monotonic()
    probes = SocketProbes(settings, mode)
    took = time.monotonic() - started
    passed = 0
    tls_rejected: list[str] = []
    try:
        wanted = dict(probes.preload(tls=True))  # a program serves several hooks: once each
        for name, kind in wanted.items():
            try:
                probes.bpf.program(name, kind)
                passed += 1
            except OSError as error:
                if kind == PROG_KPROBE and name.startswith(("uprobe_", "uretprobe_")):
                    tls_rejected.append(name)
                    continue
                raise SetupError(
                    f"the kernel's verifier refused BPF program {name}: {error}",
                    "report it with the verifier's log above; `--probe-mode` picks the "
                    "other set of socket programs where the kernel has both",
                ) from None
    finally:
        probes.close()
    return VerifiedPrograms(
        passed, probes.from_cache, took, compiled.cache_path(settings.cflags), tuple(tls_rejected)
    )


class SocketProbes:
    def __init__(self, settings: ProbeSettings, mode: ProbeMode) -> None:
        self.settings = settings
        self.mode = mode
        program, self.from_cache = compiled.load_or_compile(settings.cflags)
        try:
            self.bpf = LoadedObject(program)
        except OSError as error:
            raise SetupError(
                f"could not create the BPF maps: {error}",
                "check that the agent runs as root and that RLIMIT_MEMLOCK is not limiting "
                "it (ulimit -l); a smaller --ringbuf-mb or --max-connections needs less",
            ) from None
        self.attached: list[str] = []
        u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
        self._conns = self.bpf.map("conns", u64, settings.layout.conn_state)
        self._traced = TracedPids(self.bpf.map_fds["traced_pids"])
        self._settings_map = self.bpf.map("settings", u32, u64)
        self._ports = self.bpf.map("selector_ports", u16, u8)
        self._comms = self.bpf.map("selector_comms", CommKey, u8)
        self._sockets = self.bpf.map("sockets", u64, SocketFacts)
        self._threads = self.bpf.map("threads", u64, ThreadState)
        self._pending_accept = self.bpf.map("pending_accept", u64, AcceptArgs)
        self._h2_marks = self.bpf.map("h2_marks", u64, u8)
        self._counters = self.bpf.map("counters", u32, u64)
        self._answered = AnsweredMarks(self.bpf.map_fds["answered"], settings.answered_slots)
        self._flush_queue = self.bpf.map("flush_queue", u32, FlushRequest)
        self._ring: MappedRingBuffer | RingBuffer | None = None
        self._flush_on_request = False  # set by attach(): FLUSH_PROGRAM runs here
        self.tls = TlsHooks(self.bpf)
        self._loaders: set[tuple[int, int]] = set()  # dynamic loader files tried
        self.set_idle_flush_ns(settings.idle_flush_ns)
        self._set(Setting.AGENT_TGID, os.getpid())

    # -------------------------------------------------------------- attach / detach

    def _syscall_programs(self, entry: str, exit_: str | None) -> tuple[str | None, str | None]:
        """The programs this probe mode hooks a syscall's entry and exit with (None: no hook)."""
        if self.mode is not ProbeMode.KPROBE:
            if exit_ == "io" and self.settings.io_args_at_exit:
                return None, "tp_exit_io"  # the exit reads the arguments itself
            return f"tp_enter_{entry}", f"tp_exit_{exit_}" if exit_ else None
        return f"syscall__{entry}", f"kret_{exit_}" if exit_ else None

    @property
    def hooks_loaders(self) -> bool:
        """Libraries loaded later are told by the dynamic loader's uprobe, not mmap()."""
        return self.mode is ProbeMode.SOCKET

    def _hooked_syscalls(self) -> dict[str, tuple[str, str | None]]:
        if self.mode is ProbeMode.SOCKET:
            return {}  # (getppid, if the flush trigger needs it, is added at attach)
        return SYSCALL_PROGRAMS

    def preload(self, tls: bool) -> list[tuple[str, int]]:
        """Start the verifier on every program attach() will use (and the TLS uprobes');
        returns them, as (name, program type)."""
        kind = PROG_KPROBE if self.mode is ProbeMode.KPROBE else PROG_TRACEPOINT
        wanted = [
            (program, kind)
            for hooks in self._hooked_syscalls().values()
            for program in self._syscall_programs(*hooks)
            if program
        ]
        if self.mode is ProbeMode.SOCKET:
            wanted += [(name, PROG_TRACEPOINT) for name in set(SOCKET_TRACEPOINT_PROGRAMS.values())]
        wanted += [(name, PROG_TRACEPOINT) for name in LIFECYCLE_TRACEPOINTS.values()]
        wanted.append((FLUSH_PROGRAM, PROG_RAW_TRACEPOINT))
        if tls:
            wanted += [
                (name, PROG_KPROBE)
                for name in self.bpf.compiled.programs
                if name.startswith(("uprobe_", "uretprobe_"))
                and (name != LOADER_PROGRAM or self.hooks_loaders)
            ]
        self.bpf.preload(wanted)
        return wanted

    def attach(self) -> None:
        started = time.monotonic()
        self._flush_on_request = self._flush_runs_on_request()
        syscalls = dict(self._hooked_syscalls())
        if self._flush_on_request:
            syscalls.pop("getppid", None)
        else:
            syscalls["getppid"] = SYSCALL_PROGRAMS["getppid"]
        if self.mode is ProbeMode.SOCKET:
            for tracepoint, program in SOCKET_TRACEPOINT_PROGRAMS.items():
                self._attach_tracepoint(tracepoint, program)
        for syscall, hooks in syscalls.items():
            on_entry, on_exit = self._syscall_programs(*hooks)
            if self.mode is not ProbeMode.KPROBE:
                if on_entry:
                    self._attach_tracepoint(f"syscalls:sys_enter_{syscall}", on_entry)
                if on_exit:
                    self._attach_tracepoint(f"syscalls:sys_exit_{syscall}", on_exit)
            else:
                function = syscall_function(syscall)
                self._attach(f"kprobe:{function}", self.bpf.attach_kprobe, function, on_entry)
                if on_exit:
                    self._attach(
                        f"kretprobe:{function}",
                        self.bpf.attach_kprobe,
                        function,
                        on_exit,
                        on_return=True,
                    )
        for tracepoint, fn_name in LIFECYCLE_TRACEPOINTS.items():
            self._attach_tracepoint(tracepoint, fn_name)
        log.info(
            "attached %d %s probes in %.2fs",
            len(self.attached),
            self.mode.value,
            time.monotonic() - started,
        )

    def _flush_runs_on_request(self) -> bool:
        """Whether this kernel runs FLUSH_PROGRAM on request; tried once with an empty queue,
        so that it does nothing. Where it cannot (before Linux 5.10), getppid() is hooked."""
        try:
            self.bpf.run(FLUSH_PROGRAM)
        except OSError as error:
            log.info("flush trigger: a getppid() hook (%s)", error.strerror)
            return False
        return True

    def hook_loader(self, path: str, file_id: tuple[int, int]) -> None:
        """Hook this dynamic loader's _dl_debug_state, once per file (tried once)."""
        if file_id in self._loaders:
            return
        self._loaders.add(file_id)
        try:
            offset = bpf_calls.symbol_offset(path, LOADER_SYMBOL)
            self.bpf.attach_uprobe(path, offset, LOADER_PROGRAM)
        except OSError as error:
            log.warning(
                "libraries %s loads later (dlopen) are not looked at for TLS: %s", path, error
            )
            return
        log.info("dynamic loader %s hooked: libraries loaded later are looked at", path)

    def _attach_tracepoint(self, tracepoint: str, program: str) -> None:
        self._attach(f"tracepoint:{tracepoint}", self.bpf.attach_tracepoint, tracepoint, program)

    def _attach(
        self, what: str, attach: Callable[..., None], *args: object, **kwargs: object
    ) -> None:
        try:
            attach(*args, **kwargs)
        except OSError as error:
            raise SetupError(
                f"could not attach {args[-1]} to {what}: {error}",
                "check that tracefs is mounted and this kernel has CONFIG_FTRACE_SYSCALLS "
                "(tracepoints) or CONFIG_KPROBES (kprobes); --probe-mode picks one",
            ) from None
        self.attached.append(what)

    def close(self) -> None:
        """Detach every probe and free the maps.

        Each tracepoint detach waits for the kernel's RCU grace period: about 70 ms each here,
        2.3 s for all 32. Detaching them from parallel threads saved only 0.5 s (the kernel
        serialises them), so it stays simple.
        """
        self._answered.close()
        self.bpf.close()
        self.attached.clear()

    # -------------------------------------------------------------- events

    def open_events(self, on_record: Callable[[bytes], None]) -> None:
        self._ring = self.bpf.ring_buffer("events", on_record)

    def poll(self, timeout_ms: int) -> None:
        """Wait for a forced wake-up or the timeout, then drain whatever is in the ring."""
        assert self._ring is not None, "open_events() first"
        self._ring.poll(timeout_ms)

    # -------------------------------------------------------------- selection

    def _set(self, index: Setting, value: int) -> None:
        self._settings_map[index] = value

    def set_idle_flush_ns(self, idle_ns: int) -> None:
        self._set(Setting.IDLE_NS, idle_ns)

    def set_trace_all(self, enabled: bool) -> None:
        self._set(Setting.TRACE_ALL, int(enabled))

    def select_ports(self, ports: Iterable[int]) -> None:
        count = 0
        for port in ports:
            self._ports[port] = 1
            count += 1
        self._set(Setting.PORT_FILTER, int(count > 0))

    def select_names(self, names: Iterable[str]) -> None:
        """Executable names the kernel matches at exec itself (exact, at most 15 bytes)."""
        for name in names:
            self._comms[CommKey(name.encode()[: TASK_COMM_LEN - 1])] = 1

    def allow_pid(self, pid: int) -> None:
        if pid != os.getpid():  # never the agent itself, as the kernel's allow()
            self._traced.allow(pid)

    def forget_pid(self, pid: int) -> None:
        self._traced.forget(pid)

    def is_allowed(self, pid: int) -> bool:
        return pid in self._traced

    # -------------------------------------------------------------- seeding from /proc

    def seed_listener(self, pid: int, fd: int, family: int, raw: bytes, port: int) -> None:
        facts = SocketFacts()
        facts.bound = _endpoint(family, raw, port)
        facts.type = socket.SOCK_STREAM  # found among /proc's TCP listeners
        self._sockets[conn_key(pid, fd)] = facts

    def seed_connection(
        self,
        pid: int,
        fd: int,
        role: Role,
        family: int,
        local: tuple[bytes, int],
        peer: tuple[bytes, int],
        conn_id: int,
        comm: bytes = b"",
    ) -> bool:
        """Track a connection opened before tracing began; False if it is tracked already."""
        key = conn_key(pid, fd)
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
        state.ev.comm = comm  # the kernel names the connections it makes (new_conn)
        state.phase = Phase.IDLE
        try:
            self._conns[key] = state
        except OSError:  # the map is full: counted in the kernel's way, logged here
            log.debug("conns map full; connection %d/%d not seeded", pid, fd)
            return False
        return True

    def seed_blocked_read(
        self, pid: int, tid: int, nr: int, fd: int, buf: int, iovcnt: int, kind: int
    ) -> None:
        """A thread already inside a read when the probes attached: its exit still counts."""
        if self.settings.io_args_at_exit:
            return  # the exit reads the call's arguments itself
        key = conn_key(pid, tid)
        # only the call in flight: what else the thread's entry holds (a TLS call it is in,
        # the socket it read last) stays
        thread = self._threads.get(key) or ThreadState()
        thread.io.conn_key = conn_key(pid, fd)
        thread.io.buf = buf
        thread.io.iovcnt = iovcnt
        thread.io.kind = kind
        thread.io.dir = 1  # DIR_INGRESS
        thread.io.nr = nr
        # from now on a call on no connection clears its thread's seeded entry (io_enter)
        self._set(Setting.SEEDED_CALLS, 1)
        self._threads[key] = thread

    def seed_blocked_accept(self, pid: int, tid: int, nr: int, listen_fd: int, addr: int) -> None:
        if self.mode is ProbeMode.SOCKET:
            return  # the accepted socket is known by its handshake (accepted_socks)
        args = AcceptArgs()
        args.listen_fd = listen_fd
        args.peer_addr = addr
        args.nr = nr
        self._pending_accept[conn_key(pid, tid)] = args

    def mark_h2(self, pid: int, fd: int) -> None:
        """This connection speaks HTTP/2 (found by its frames): send its bytes as chunks."""
        self._h2_marks[conn_key(pid, fd)] = 1

    # -------------------------------------------------------------- counters and sweep

    def counters(self) -> dict[Counter, int]:
        totals = {}
        for index in range(COUNTER_MAX):
            totals[Counter(index)] = sum(self._counters[index])
        return totals

    def answered_marks(self) -> list[tuple[int, int]]:
        """(key, slot) of connections whose exchange has its answer: the idle sweep's
        candidates."""
        return self._answered.marked()

    def connection_keys(self) -> list[int]:
        """Every tracked connection's key, without reading the (big) values: a batch read
        would allocate max_entries values (16384 x 2.8 KiB) on every call."""
        return [key.value for key in self._conns.keys()]  # noqa: SIM118 (a map, not a dict)

    def flush(self, requests: list[tuple[int, bool, int]]) -> None:
        """Ask the kernel to emit these connections' exchanges, each (key, force, the answered
        slot that named it or FLUSH_NO_SLOT); it checks idleness itself."""
        queue = self._flush_queue
        for start in range(0, len(requests), FLUSH_QUEUE_SIZE):
            batch = requests[start : start + FLUSH_QUEUE_SIZE]
            for index, (key, force, slot) in enumerate(batch):
                queue[index] = FlushRequest(key, int(force), slot)
            self._set(Setting.FLUSH_COUNT, len(batch))
            if self._flush_on_request:
                self.bpf.run(FLUSH_PROGRAM)  # flush_trigger(), in this thread
            else:
                os.getppid()  # sys_enter_getppid runs flush_trigger() for our pid
        self._set(Setting.FLUSH_COUNT, 0)

    def forget_connections(self, keys: Iterable[int]) -> None:
        for key in keys:
            with contextlib.suppress(KeyError):
                del self._conns[key]


def _endpoint(family: int, raw: bytes, port: int) -> Endpoint:
    endpoint = Endpoint()
    ctypes.memmove(endpoint.addr, raw[:16], min(16, len(raw)))
    endpoint.port = port
    endpoint.family = family
    return endpoint
