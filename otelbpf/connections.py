"""Connection stage: what the kernel could not see about connections, from /proc.

Seeds the kernel's connection map with connections opened before a process was traced (their
addresses, and a role from whether the local port is a listening one), records listening
sockets so accepted connections get their local address, and recognises the agent's own
traffic (an exporter's connection seen from a traced collector) so it never becomes a span.
"""

from __future__ import annotations

import itertools
import logging
import os
import platform
import socket
import time
from collections import OrderedDict
from typing import NamedTuple, Protocol

import psutil

from otelbpf import procfs
from otelbpf.abi import Role
from otelbpf.exchange import Exchange, SocketAddress

log = logging.getLogger(__name__)

# Connection ids the agent hands out for seeded connections; the kernel counts up from 1.
SEEDED_ID_BASE = 1 << 62


class ConnectionSeeder(Protocol):
    def seed_listener(self, pid: int, fd: int, family: int, raw: bytes, port: int) -> None: ...

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
    ) -> bool: ...

    def seed_blocked_read(
        self, pid: int, tid: int, nr: int, fd: int, buf: int, iovcnt: int, kind: int
    ) -> None: ...

    def seed_blocked_accept(
        self, pid: int, tid: int, nr: int, listen_fd: int, addr: int
    ) -> None: ...


class BlockedCall(NamedTuple):
    kind: str  # "read" or "accept"
    io_kind: int  # IO_FLAT / IO_IOVEC / IO_MSG as bpf/agent.c numbers them (enum io_kind)


# Syscalls a thread can sit in when the probes attach, whose exit we must not miss: a read
# already waiting for the next request, an accept waiting for the next connection.
BLOCKING_SYSCALLS: dict[str, dict[int, BlockedCall]] = {
    "x86_64": {
        0: BlockedCall("read", 0),  # read
        45: BlockedCall("read", 0),  # recvfrom
        19: BlockedCall("read", 1),  # readv
        47: BlockedCall("read", 2),  # recvmsg
        43: BlockedCall("accept", 0),  # accept
        288: BlockedCall("accept", 0),  # accept4
    },
    "aarch64": {
        63: BlockedCall("read", 0),
        207: BlockedCall("read", 0),
        65: BlockedCall("read", 1),
        212: BlockedCall("read", 2),
        202: BlockedCall("accept", 0),
        242: BlockedCall("accept", 0),
    },
}


def blocked_syscalls(pid: int) -> list[tuple[int, int, list[int]]]:
    """(tid, syscall number, arguments) of pid's threads now blocked in a system call."""
    found = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as file:
                fields = file.read().split()
        except OSError:
            continue
        if len(fields) >= 7 and fields[0].isdigit():
            found.append((int(tid), int(fields[0]), [int(arg, 16) for arg in fields[1:7]]))
    return found


class ExistingConnections:
    def __init__(self, probes: ConnectionSeeder) -> None:
        self._probes = probes
        self._ids = itertools.count(SEEDED_ID_BASE)

    def seed(self, pid: int) -> int:
        """Tell the kernel about pid's TCP sockets; returns the number of connections seeded."""
        table = procfs.read_tcp_table(pid)
        listening = procfs.listening_ports(table)
        comm = procfs.command_name(pid)  # what its exchanges carry, as the kernel's would
        seeded = 0
        connection_fds: set[int] = set()
        listener_fds: set[int] = set()
        for fd, sock in procfs.tcp_sockets_of(pid, table):
            if sock.state == procfs.TCP_LISTEN:
                self._probes.seed_listener(pid, fd, sock.family, sock.local_raw, sock.local.port)
                listener_fds.add(fd)
                continue
            if sock.state != procfs.TCP_ESTABLISHED:
                continue
            if sock.local.port in listening:
                role = Role.SERVER
            elif sock.remote.port in listening and sock.remote.address == sock.local.address:
                role = Role.CLIENT  # a loopback client of a local server
            else:
                role = Role.UNKNOWN  # the kernel infers it from the first data direction
            if self._probes.seed_connection(
                pid,
                fd,
                role,
                sock.family,
                (sock.local_raw, sock.local.port),
                (sock.remote_raw, sock.remote.port),
                next(self._ids),
                comm,
            ):
                seeded += 1
                connection_fds.add(fd)
        self._seed_blocked_calls(pid, connection_fds, listener_fds)
        return seeded

    def _seed_blocked_calls(
        self, pid: int, connection_fds: set[int], listener_fds: set[int]
    ) -> None:
        """Threads already inside read() or accept() when the probes attached: their syscall
        entry was never seen, so without this the request (or connection) they return would be
        lost. /proc/PID/task/TID/syscall gives the call's number and arguments; the kernel side
        checks the number again at the exit, so an entry left by a call that ended unseen is
        dropped, never misread."""
        table = BLOCKING_SYSCALLS.get(platform.machine(), {})
        for tid, nr, args in blocked_syscalls(pid):
            call = table.get(nr)
            if call is None:
                continue
            fd = args[0]
            if call.kind == "read" and fd in connection_fds:
                self._probes.seed_blocked_read(pid, tid, nr, fd, args[1], args[2], call.io_kind)
            elif call.kind == "accept" and fd in listener_fds:
                self._probes.seed_blocked_accept(pid, tid, nr, fd, args[1])


class AddressBook:
    """Addresses of connections the kernel could not learn (accept with a NULL sockaddr), read
    from /proc when the kernel asks, and filled into their exchanges. Bounded."""

    def __init__(self, capacity: int = 16384) -> None:
        self._known: OrderedDict[int, tuple[SocketAddress, SocketAddress]] = OrderedDict()
        self._tried: OrderedDict[int, None] = OrderedDict()
        self._capacity = capacity

    def learn(self, pid: int, fd: int, conn_id: int) -> bool:
        inode = procfs.socket_fds(pid).get(fd)
        if inode is None:
            return False
        sock = procfs.read_tcp_table(pid).get(inode)
        if sock is None:
            return False
        self._known[conn_id] = (sock.local, sock.remote)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)
        return True

    def fill(
        self,
        conn_id: int,
        local: SocketAddress | None,
        peer: SocketAddress | None,
        pid: int = 0,
        fd: int = -1,
    ) -> tuple[SocketAddress | None, SocketAddress | None]:
        known = self._known.get(conn_id)
        if known is None and pid and conn_id not in self._tried:
            # the kernel's request came too late (a busy agent): a kept-alive socket is
            # still there to read
            self._tried[conn_id] = None
            while len(self._tried) > self._capacity:
                self._tried.popitem(last=False)
            if self.learn(pid, fd, conn_id):
                known = self._known.get(conn_id)
        if known is None:
            return local, peer
        return local or known[0], peer or known[1]


NOT_OWN_CAPACITY = 65536


_OWN_FDS = "/proc/self/fd"


class OwnTraffic:
    """The agent's own sockets, to drop exchanges whose peer is the agent (its exports seen
    from a traced collector on this host).

    The agent's local ports come from its own descriptors (getsockname on a dup of each
    socket fd), with the port each is connected to (getpeername), re-read only when its
    sockets changed. An exchange is the agent's when its peer is one of those local
    endpoints and its server's port the one that socket is connected to: Linux gives one
    local port to several connections to different destinations, so a traced client's
    connection can share the agent's port (in a benchmark at 10k req/s, one of h2load's 50
    did, and 2,999 of nginx's spans were dropped as the agent's). The kernel tells the agent
    when it connects somewhere (expect_new_socket): the next exchange from a local peer it
    does not know is checked at once. Otherwise such a peer is checked at most every
    CHECK_INTERVAL_S, a backstop for a notice lost to a full ring buffer. A check lists the
    agent's descriptors (a hundred and more: its BPF programs, maps and links; 0.2 to 0.5
    ms) and reads the links of the sockets it knows: a reconnect often gets the closed
    socket's number back, so the list alone would not show it. The sweep only reads those
    few links (recheck), so a closed socket's port stops counting as the agent's.
    """

    CHECK_INTERVAL_S = 0.1

    def __init__(self) -> None:
        # own local endpoint -> the ports it is connected to (0: not connected)
        self._endpoints: dict[SocketAddress, set[int]] = {}
        self._not_own: set[SocketAddress] = set()
        self._socket_fds: dict[int, int] = {}
        self._fd_names: frozenset[str] = frozenset()
        self._connected = True  # read every link at the first refresh
        self._connecting = False  # one of our sockets had no peer at the last refresh
        self._checked = 0.0
        self._local_addresses = _local_addresses()

    def refresh(self) -> None:
        self._checked = time.monotonic()
        # The agent holds a few hundred descriptors (its BPF programs, maps and links): their
        # names are listed, and each one's link read only when the list changed or the agent
        # connected somewhere (a new socket may have taken a closed one's number).
        try:
            names = frozenset(os.listdir(_OWN_FDS))
        except OSError:
            names = frozenset()
        if names == self._fd_names and not self._connected and not self._sockets_changed():
            return
        self._fd_names = names
        self._connected = False
        fds = procfs.socket_fds(os.getpid())
        if fds == self._socket_fds and not self._connecting:
            return
        self._socket_fds = fds
        self._not_own.clear()  # a new socket of ours may own a port checked before
        endpoints: dict[SocketAddress, set[int]] = {}
        for fd in fds:
            try:
                with socket.socket(fileno=os.dup(fd)) as sock:
                    address = sock.getsockname()
                    remote = _peer_port(sock)
            except OSError:
                continue
            if isinstance(address, tuple) and len(address) >= 2:
                local = SocketAddress(_unmapped(address[0]), address[1])
                endpoints.setdefault(local, set()).add(remote)
        self._endpoints = endpoints
        # a connect() still in progress has no peer yet: read the sockets again next time
        self._connecting = any(0 in ports for ports in endpoints.values())

    def recheck(self) -> None:
        """The sweep's check: only the links of the sockets known, a few system calls."""
        if self._sockets_changed():
            self.refresh()

    def _sockets_changed(self) -> bool:
        """A known socket fd closed, or holding another socket now, or one was connecting."""
        if self._connecting:
            return True
        for fd, inode in self._socket_fds.items():
            try:
                target = os.readlink(f"{_OWN_FDS}/{fd}")
            except OSError:
                return True
            if target != f"socket:[{inode}]":
                return True
        return False

    def expect_new_socket(self) -> None:
        """The agent connected somewhere: check its sockets on the next exchange from a local
        peer it does not know, whatever the rate limit says."""
        self._checked = 0.0
        self._connected = True
        self._not_own.clear()

    def is_own(self, exchange: Exchange) -> bool:
        return self.serves_own(exchange.role, exchange.local, exchange.peer)

    def serves_own(
        self, role: Role, local: SocketAddress | None, peer: SocketAddress | None
    ) -> bool:
        """Whether a connection with these ends is a server's, serving the agent (an
        exchange's, or an HTTP/2 chunk's: gRPC exports)."""
        if peer is None or role != Role.SERVER:
            return False
        if peer in self._endpoints:
            return self._connected_to(peer, local)
        if peer.address not in self._local_addresses or peer in self._not_own:
            return False  # the agent's exports to another host are that host's concern
        if time.monotonic() - self._checked >= self.CHECK_INTERVAL_S:
            self.refresh()
            if peer in self._endpoints:
                return self._connected_to(peer, local)
            # checked against our sockets as they are: not ours until they change (bounded)
            if len(self._not_own) >= NOT_OWN_CAPACITY:
                self._not_own.clear()
            self._not_own.add(peer)
        return False

    def _connected_to(self, own: SocketAddress, server: SocketAddress | None) -> bool:
        """Whether the agent's socket at `own` is connected to this server's port (a server
        whose own port is not known, or a socket of ours not connected yet, is given the
        benefit of the doubt, as before ports were compared)."""
        ports = self._endpoints[own]
        # a server known by its listener's bind(): port 0 there says nothing
        return server is None or server.port == 0 or server.port in ports or 0 in ports


def _peer_port(sock: socket.socket) -> int:
    """The port a socket is connected to; 0 when it is not connected."""
    try:
        remote = sock.getpeername()
    except OSError:
        return 0
    return remote[1] if isinstance(remote, tuple) and len(remote) >= 2 else 0


def _unmapped(address: str) -> str:
    return address.removeprefix("::ffff:") if address.startswith("::ffff:") else address


def _local_addresses() -> set[str]:
    addresses = {"127.0.0.1", "::1"}
    try:
        for entries in psutil.net_if_addrs().values():
            addresses.update(_unmapped(e.address.split("%")[0]) for e in entries)
    except OSError:
        pass
    return addresses
