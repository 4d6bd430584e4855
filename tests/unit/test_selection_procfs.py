"""Process selection, /proc socket tables and connection seeding on real processes and sockets,
the decode stage on hand-filled kernel records, and the kernel-to-wall clock."""

from __future__ import annotations

import ctypes
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from otelbpf import procfs
from otelbpf.abi import (
    AbiLayout,
    Endpoint,
    EventType,
    ExchangeFlag,
    ExchangeHeader,
    ProcessEvent,
    Role,
)
from otelbpf.clock import MonotonicToWall
from otelbpf.connections import (
    BLOCKING_SYSCALLS,
    SEEDED_ID_BASE,
    ExistingConnections,
    blocked_syscalls,
)
from otelbpf.decode import Decoder, ProcessNotice
from otelbpf.errors import SetupError
from otelbpf.exchange import Exchange, SocketAddress
from otelbpf.procfs import TCP_ESTABLISHED, TCP_LISTEN, TcpSocket
from otelbpf.selection import ProcessSelector, Selectors

SLEEP = shutil.which("sleep") or "/bin/sleep"
LOOPBACK_RAW = bytes([127, 0, 0, 1]) + bytes(12)


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- processes


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen]]:
    children: list[subprocess.Popen] = []

    def start(argv: list[str], **kwargs: object) -> subprocess.Popen:
        child = subprocess.Popen(argv, **kwargs)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()


@pytest.fixture
def unique_program(tmp_path: Path) -> Path:
    """A copy of sleep(1) under a name no other process on the host has."""
    path = tmp_path.resolve() / f"otelbpf-sel-{uuid.uuid4().hex[:12]}"
    shutil.copy(SLEEP, path)
    path.chmod(0o755)
    return path


def python_child(spawn: Callable[..., subprocess.Popen], code: str) -> tuple[subprocess.Popen, str]:
    """A Python child that prints one line when it is ready, then waits for its stdin to close."""
    child = spawn(
        [sys.executable, "-c", code + "\nsys.stdout.flush()\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = child.stdout.readline()
    assert line, f"child exited early with {child.wait()}"
    return child, line


# ---------------------------------------------------------------- exe globs


@pytest.mark.parametrize(
    ("globs", "exe_path", "name", "matches"),
    [
        (("nginx",), "/usr/sbin/nginx", "", True),  # the executable's name
        (("/usr/sbin/*",), "/usr/sbin/nginx", "", True),  # the full path
        (("python3*",), "/usr/bin/python3.11", "", True),
        (("*/bin/python3.?",), "/usr/bin/python3.11", "", False),
        (("ngin?",), "/usr/sbin/nginx", "", True),
        (("NGINX",), "/usr/sbin/nginx", "", False),  # case-sensitive
        (("nginx",), "/usr/sbin/nginx-debug", "", False),
        (("gunicorn",), "", "gunicorn", True),  # no exe path: the kernel's name
        (("gunicorn",), "/usr/bin/python3.11", "gunicorn", True),
        (("redis*", "node"), "/usr/local/bin/node", "", True),
        (("*",), "", "", False),  # nothing to match against
        ((), "/usr/sbin/nginx", "nginx", False),  # no --exe at all
    ],
)
def test_exe_matches(globs: tuple[str, ...], exe_path: str, name: str, matches: bool) -> None:
    selector = ProcessSelector(Selectors(exe_globs=globs))
    assert selector.exe_matches(exe_path, name) is matches


def test_process_matches_exe_reads_proc(spawn, unique_program: Path) -> None:
    child = spawn([str(unique_program), "600"])
    assert ProcessSelector(Selectors(exe_globs=(unique_program.name,))).process_matches_exe(
        child.pid
    )
    assert not ProcessSelector(Selectors(exe_globs=("nope",))).process_matches_exe(child.pid)
    missing = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    selector = ProcessSelector(Selectors(exe_globs=("fallback",)))
    assert selector.process_matches_exe(missing, "fallback")


def test_selectors_trace_all() -> None:
    assert Selectors().trace_all
    assert not Selectors(pids=(1,)).trace_all
    assert not Selectors(ports=(80,)).trace_all
    assert not Selectors(exe_globs=("x",)).trace_all


# ---------------------------------------------------------------- initial pids


def test_initial_pids_missing_pid_is_a_setup_error() -> None:
    missing = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    with pytest.raises(SetupError) as raised:
        ProcessSelector(Selectors(pids=(missing,))).initial_pids()
    assert raised.value.message == f"--pid {missing}: no such process"
    assert str(missing) in str(raised.value)


def test_initial_pids_exe_glob_finds_a_real_child(spawn, unique_program: Path) -> None:
    child = spawn([str(unique_program), "600"])
    by_name = ProcessSelector(Selectors(exe_globs=("otelbpf-sel-*" + unique_program.name[-12:],)))
    assert by_name.initial_pids() == {child.pid}
    by_path = ProcessSelector(Selectors(exe_globs=(str(unique_program.parent) + "/*",)))
    assert by_path.initial_pids() == {child.pid}
    as_agent = ProcessSelector(Selectors(exe_globs=(unique_program.name,)), agent_pid=child.pid)
    assert as_agent.initial_pids() == set()  # the agent never traces itself


def test_initial_pids_pid_includes_existing_children(spawn) -> None:
    code = (
        "import subprocess, sys\n"
        f"grandchild = subprocess.Popen([{SLEEP!r}, '600'])\n"
        "print(grandchild.pid)\n"
    )
    parent, line = python_child(spawn, code)
    grandchild = int(line)
    try:
        selected = ProcessSelector(Selectors(pids=(parent.pid,))).initial_pids()
        assert selected == {parent.pid, grandchild}
    finally:
        os.kill(grandchild, 9)


# ---------------------------------------------------------------- /proc TCP tables


@dataclass
class Pair:
    listener: socket.socket
    client: socket.socket
    accepted: socket.socket
    kind: str

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    @property
    def client_port(self) -> int:
        return self.client.getsockname()[1]


def make_pair(kind: str) -> Pair:
    if kind == "ipv4":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    elif kind == "ipv6":
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        listener.bind(("::1", 0))
        client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    else:  # a dual-stack listener and an IPv4 client: the accepted side is IPv4-mapped
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", 0))
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.listen()
    host = "::1" if kind == "ipv6" else "127.0.0.1"
    client.connect((host, listener.getsockname()[1]))
    accepted, _ = listener.accept()
    return Pair(listener, client, accepted, kind)


PAIR_KINDS = [
    "ipv4",
    pytest.param(
        "ipv6",
        marks=pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback"),
    ),
    pytest.param(
        "dual-stack",
        marks=pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback"),
    ),
]


@pytest.fixture(params=PAIR_KINDS)
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    made = make_pair(request.param)
    try:
        yield made
    finally:
        for sock in (made.client, made.accepted, made.listener):
            sock.close()


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def expected_sockets(pair: Pair) -> dict[str, TcpSocket]:
    port, cport = pair.port, pair.client_port
    if pair.kind == "ipv4":
        family, raw, text = socket.AF_INET, LOOPBACK_RAW, "127.0.0.1"
        any_raw, any_text = bytes(16), "0.0.0.0"
        client_family, client_raw, client_text = family, raw, text
    elif pair.kind == "ipv6":
        family, raw, text = socket.AF_INET6, bytes(15) + b"\x01", "::1"
        any_raw, any_text = bytes(16), "::"
        client_family, client_raw, client_text = family, raw, text
    else:
        family, raw, text = (
            socket.AF_INET6,
            bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1]),
            "127.0.0.1",
        )
        any_raw, any_text = bytes(16), "::"
        client_family, client_raw, client_text = socket.AF_INET, LOOPBACK_RAW, "127.0.0.1"
    return {
        "listener": TcpSocket(
            inode=inode(pair.listener),
            local=SocketAddress(any_text if pair.kind == "dual-stack" else text, port),
            remote=SocketAddress(any_text, 0),
            state=TCP_LISTEN,
            family=family,
            local_raw=any_raw if pair.kind == "dual-stack" else raw,
            remote_raw=any_raw,
        ),
        "client": TcpSocket(
            inode=inode(pair.client),
            local=SocketAddress(client_text, cport),
            remote=SocketAddress(client_text, port),
            state=TCP_ESTABLISHED,
            family=client_family,
            local_raw=client_raw,
            remote_raw=client_raw,
        ),
        "accepted": TcpSocket(
            inode=inode(pair.accepted),
            local=SocketAddress(text, port),
            remote=SocketAddress(text, cport),
            state=TCP_ESTABLISHED,
            family=family,
            local_raw=raw,
            remote_raw=raw,
        ),
    }


def test_read_tcp_table(pair: Pair) -> None:
    table = procfs.read_tcp_table()
    expected = expected_sockets(pair)
    by_pid = procfs.read_tcp_table(os.getpid())  # the same namespace's table, through our pid
    for role, sock in expected.items():
        assert table[sock.inode] == sock, role
        # (the whole tables may differ: other processes open sockets between the two reads)
        assert by_pid[sock.inode] == sock, role


def test_tcp_sockets_of(pair: Pair) -> None:
    expected = expected_sockets(pair)
    mine = {
        pair.listener.fileno(): expected["listener"],
        pair.client.fileno(): expected["client"],
        pair.accepted.fileno(): expected["accepted"],
    }
    found = dict(procfs.tcp_sockets_of(os.getpid()))
    assert {fd: found.get(fd) for fd in mine} == mine
    assert procfs.socket_fds(os.getpid())[pair.client.fileno()] == inode(pair.client)


def test_listening_ports(pair: Pair) -> None:
    ports = procfs.listening_ports(procfs.read_tcp_table())
    assert pair.port in ports
    assert pair.client_port not in ports


def test_pids_with_port_and_port_selector(pair: Pair, spawn) -> None:
    assert procfs.pids_with_port(pair.port) == {os.getpid()}
    # another process holding a connection to the port is found through its client side
    host = "::1" if pair.kind == "ipv6" else "127.0.0.1"
    code = (
        "import socket, sys\n"
        f"c = socket.create_connection(({host!r}, {pair.port}))\n"
        "print('connected')\n"
    )
    child, _ = python_child(spawn, code)
    peer, _ = pair.listener.accept()
    try:
        assert procfs.pids_with_port(pair.port) == {os.getpid(), child.pid}
        selector = ProcessSelector(Selectors(ports=(pair.port,)), agent_pid=0)
        assert selector.initial_pids() == {os.getpid(), child.pid}
        # with the test process as the agent, only the other process is selected
        assert ProcessSelector(Selectors(ports=(pair.port,))).initial_pids() == {child.pid}
    finally:
        peer.close()


def test_pids_with_port_nobody() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, neither listening nor connected
        assert procfs.pids_with_port(port) == set()


def test_proc_readers_tolerate_missing_processes() -> None:
    missing = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    assert procfs.read_tcp_table(missing) == {}
    assert procfs.socket_fds(missing) == {}
    assert list(procfs.tcp_sockets_of(missing)) == []


# ---------------------------------------------------------------- seeding connections


class RecordingSeeder:
    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.listeners: list[tuple] = []
        self.connections: list[tuple] = []
        self.blocked_reads: list[tuple] = []
        self.blocked_accepts: list[tuple] = []
        self.comms: list[bytes] = []

    def seed_listener(self, pid: int, fd: int, family: int, raw: bytes, port: int) -> None:
        self.listeners.append((pid, fd, family, raw, port))

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
        self.connections.append((pid, fd, role, family, local, peer, conn_id))
        self.comms.append(comm)
        return self.accept

    def seed_blocked_read(
        self, pid: int, tid: int, nr: int, fd: int, buf: int, iovcnt: int, kind: int
    ) -> None:
        self.blocked_reads.append((pid, tid, nr, fd, buf, iovcnt, kind))

    def seed_blocked_accept(self, pid: int, tid: int, nr: int, listen_fd: int, addr: int) -> None:
        self.blocked_accepts.append((pid, tid, nr, listen_fd, addr))


PAIR_CHILD = """
import socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
client = socket.create_connection(listener.getsockname())
accepted, _ = listener.accept()
ready = (listener.fileno(), client.fileno(), accepted.fileno(),
         listener.getsockname()[1], client.getsockname()[1])
if "close-listener" in sys.argv:
    listener.close()
print(*ready)
"""


def start_pair_child(spawn, *args: str) -> tuple[int, int, int, int, int, int]:
    child = spawn(
        [sys.executable, "-c", PAIR_CHILD + "sys.stdout.flush()\nsys.stdin.read()\n", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = child.stdout.readline()
    assert line, f"child exited early with {child.wait()}"
    lfd, cfd, afd, port, cport = map(int, line.split())
    return child.pid, lfd, cfd, afd, port, cport


def test_seed_loopback_pair_roles(spawn) -> None:
    pid, lfd, cfd, afd, port, cport = start_pair_child(spawn)
    seeder = RecordingSeeder()
    assert ExistingConnections(seeder).seed(pid) == 2

    assert seeder.listeners == [(pid, lfd, socket.AF_INET, LOOPBACK_RAW, port)]
    by_fd = {call[1]: call[:-1] for call in seeder.connections}
    assert by_fd == {
        cfd: (pid, cfd, Role.CLIENT, socket.AF_INET, (LOOPBACK_RAW, cport), (LOOPBACK_RAW, port)),
        afd: (pid, afd, Role.SERVER, socket.AF_INET, (LOOPBACK_RAW, port), (LOOPBACK_RAW, cport)),
    }
    ids = sorted(call[-1] for call in seeder.connections)
    assert ids == [SEEDED_ID_BASE, SEEDED_ID_BASE + 1]
    # the process's command name, which the kernel's events carry for connections it makes
    expected_comm = Path(f"/proc/{pid}/comm").read_bytes().rstrip(b"\n")
    assert expected_comm and seeder.comms == [expected_comm, expected_comm]
    # the child's one thread sits in read(0): stdin is no connection, so nothing to carry over
    assert (seeder.blocked_reads, seeder.blocked_accepts) == ([], [])


def test_seed_counts_only_what_the_kernel_took(spawn) -> None:
    pid, *_ = start_pair_child(spawn)
    seeder = RecordingSeeder(accept=False)
    connections = ExistingConnections(seeder)
    assert connections.seed(pid) == 0
    assert len(seeder.connections) == 2
    # ids keep counting up across calls: never reused for another connection
    assert connections.seed(pid) == 0
    assert sorted(call[-1] for call in seeder.connections) == [SEEDED_ID_BASE + i for i in range(4)]


def test_seed_without_a_listener_leaves_the_role_to_the_kernel(spawn) -> None:
    pid, _lfd, cfd, afd, *_ = start_pair_child(spawn, "close-listener")
    seeder = RecordingSeeder()
    assert ExistingConnections(seeder).seed(pid) == 2
    assert seeder.listeners == []
    assert {call[1]: call[2] for call in seeder.connections} == {
        cfd: Role.UNKNOWN,
        afd: Role.UNKNOWN,
    }


BLOCKED_CHILD = """
import socket, sys, threading
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
client = socket.create_connection(listener.getsockname())
accepted, _ = listener.accept()
tids = {}
started = threading.Barrier(3)
def accept_next():
    tids["accept"] = threading.get_native_id()
    started.wait()
    listener.accept()
def read_next():
    tids["read"] = threading.get_native_id()
    started.wait()
    accepted.recv(4096)
for target in (accept_next, read_next):
    threading.Thread(target=target, daemon=True).start()
started.wait()
print(listener.fileno(), accepted.fileno(), tids["accept"], tids["read"])
"""


def wait_for_blocked(pid: int, wanted: dict[int, set[int]], timeout_s: float = 10.0) -> dict:
    """Wait until each tid in wanted sits in one of its syscall numbers; {tid: (nr, args)}."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = {tid: (nr, args) for tid, nr, args in blocked_syscalls(pid)}
        if all(tid in now and now[tid][0] in numbers for tid, numbers in wanted.items()):
            return now
        assert time.monotonic() < deadline, f"threads never blocked: {now}"
        time.sleep(0.005)  # a condition poll: /proc has no way to wait for a thread to block


@pytest.mark.skipif(
    platform.machine() not in BLOCKING_SYSCALLS, reason="no syscall table for this architecture"
)
def test_seed_carries_over_calls_blocked_before_the_probes(spawn) -> None:
    table = BLOCKING_SYSCALLS[platform.machine()]
    reads = {nr for nr, call in table.items() if call.kind == "read"}
    accepts = {nr for nr, call in table.items() if call.kind == "accept"}
    child, line = python_child(spawn, BLOCKED_CHILD)
    lfd, afd, accept_tid, read_tid = map(int, line.split())
    blocked = wait_for_blocked(child.pid, {accept_tid: accepts, read_tid: reads})
    read_nr, read_args = blocked[read_tid]
    accept_nr, accept_args = blocked[accept_tid]

    seeder = RecordingSeeder()
    assert ExistingConnections(seeder).seed(child.pid) == 2
    assert seeder.blocked_reads == [
        (child.pid, read_tid, read_nr, afd, read_args[1], 4096, table[read_nr].io_kind)
    ]
    assert read_args[1] != 0  # the buffer the request will land in
    assert seeder.blocked_accepts == [(child.pid, accept_tid, accept_nr, lfd, accept_args[1])]


def test_seed_of_a_missing_process_is_nothing() -> None:
    missing = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    seeder = RecordingSeeder()
    assert ExistingConnections(seeder).seed(missing) == 0
    assert (seeder.listeners, seeder.connections, seeder.blocked_reads) == ([], [], [])


# ---------------------------------------------------------------- decode


class FixedClock(MonotonicToWall):
    def __init__(self, offset_ns: int) -> None:
        self.offset_ns = offset_ns


OFFSET = 1_700_000_000_000_000_000


def endpoint(family: int, raw: bytes, port: int) -> Endpoint:
    ep = Endpoint()
    ctypes.memmove(ep.addr, raw, len(raw))
    ep.port = port
    ep.family = family
    return ep


REQUEST = b"GET /users/42 HTTP/1.1\r\nHost: api\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def exchange_record(layout: AbiLayout | None = None, **overrides: object) -> bytes:
    """A ring-buffer record as the kernel writes it: the fixed fields, then the heads."""
    event = ExchangeHeader()
    event.type = EventType.EXCHANGE
    event.flags = ExchangeFlag.SEEDED | ExchangeFlag.CLOSED
    event.pid = 4242
    event.tid = 4243
    event.fd = 7
    event.role = Role.SERVER
    event.conn_id = 99
    event.start_ns = 1_000
    event.end_ns = 5_000
    event.request_bytes = 10_000
    event.response_bytes = 20_000
    event.local = endpoint(socket.AF_INET, bytes([10, 0, 0, 5]), 8080)
    event.peer = endpoint(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "2001:db8::7"), 51234)
    event.comm = b"nginx"
    event.request_len = len(REQUEST)
    event.response_len = len(RESPONSE)
    for name, value in overrides.items():
        setattr(event, name, value)
    request = REQUEST[: event.request_len]
    response = RESPONSE[: event.response_len]
    return bytes(event) + request + response


EXPECTED_EXCHANGE = Exchange(
    pid=4242,
    tid=4243,
    fd=7,
    conn_id=99,
    role=Role.SERVER,
    flags=ExchangeFlag.SEEDED | ExchangeFlag.CLOSED,
    start_ns=OFFSET + 1_000,
    end_ns=OFFSET + 5_000,
    request_bytes=10_000,
    response_bytes=20_000,
    local=SocketAddress("10.0.0.5", 8080),
    peer=SocketAddress("2001:db8::7", 51234),
    comm="nginx",
    request_head=REQUEST,
    response_head=RESPONSE,
)


@pytest.mark.parametrize("layout", [AbiLayout(), AbiLayout(256, 128)], ids=["1024-512", "256-128"])
def test_decode_exchange_round_trip(layout: AbiLayout) -> None:
    decoder = Decoder(layout, FixedClock(OFFSET))
    record = exchange_record(layout)
    assert len(record) == ctypes.sizeof(ExchangeHeader) + len(REQUEST) + len(RESPONSE)
    assert decoder.decode(record) == EXPECTED_EXCHANGE
    assert decoder.decode(record + bytes(8)) == EXPECTED_EXCHANGE  # ring-buffer padding
    assert decoder.decode(record[:-1]) is None


def test_decode_exchange_details() -> None:
    layout = AbiLayout()
    decoder = Decoder(layout, FixedClock(OFFSET))
    # no response yet: the exchange ends where it starts
    unanswered = decoder.decode(exchange_record(layout, end_ns=0, response_len=0))
    assert (unanswered.start_ns, unanswered.end_ns) == (OFFSET + 1_000, OFFSET + 1_000)
    assert unanswered.response_head == b""
    assert unanswered.duration_ns == 0
    # an IPv4-mapped IPv6 address reads as IPv4; an unknown family as no address
    mapped = bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1])
    decoded = decoder.decode(
        exchange_record(
            layout,
            peer=endpoint(socket.AF_INET6, mapped, 443),
            local=endpoint(0, bytes(16), 0),
        )
    )
    assert decoded.peer == SocketAddress("192.0.2.1", 443)
    assert decoded.local is None


def test_decode_exchange_claiming_more_bytes_than_it_carries_is_none() -> None:
    record = exchange_record()
    header = ExchangeHeader.from_buffer_copy(record)
    header.response_len += 1  # says one byte more than the record holds
    forged = bytes(header) + record[ctypes.sizeof(ExchangeHeader) :]
    assert Decoder(AbiLayout(), FixedClock(0)).decode(forged) is None


@pytest.mark.parametrize("kind", [EventType.EXEC, EventType.FORK, EventType.EXIT])
def test_decode_process_event(kind: EventType) -> None:
    event = ProcessEvent()
    event.type = kind
    event.pid = 3001
    event.ppid = 3000
    event.comm = b"python3"
    event.filename = b"/usr/bin/python3.11"
    decoder = Decoder(AbiLayout(), FixedClock(0))
    record = bytes(event)
    assert len(record) == 288
    assert decoder.decode(record) == ProcessNotice(
        kind, 3001, 3000, "python3", "/usr/bin/python3.11"
    )
    assert decoder.decode(record[:-1]) is None


@pytest.mark.parametrize(
    "record",
    [b"", b"\x01\x00\x00", b"\x01\x00\x00\x00", b"\x63\x00\x00\x00" + bytes(4000), bytes(4000)],
    ids=["empty", "three-bytes", "type-only", "unknown-type", "type-zero"],
)
def test_decode_garbage_is_none(record: bytes) -> None:
    assert Decoder(AbiLayout(), FixedClock(0)).decode(record) is None


# ---------------------------------------------------------------- clock


def test_monotonic_to_wall_is_near_wall_clock() -> None:
    clock = MonotonicToWall()
    wall = clock.to_wall(time.monotonic_ns())
    assert abs(wall - time.time_ns()) < 1_000_000_000  # a sanity bound on the conversion
    assert clock.to_wall(0) == clock.offset_ns
    assert clock.to_wall(5) - clock.to_wall(2) == 3
