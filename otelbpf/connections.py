"""Connection stage: what the kernel could not see about connections, from /proc.

Seeds the kernel's connection map with connections opened before a process was traced (their
addresses, and a role from whether the local port is a listening one), records listening
sockets so accepted connections get their local address, and recognises the agent's own
traffic (an exporter's connection seen from a traced collector) so it never becomes a span.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Protocol

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
    ) -> bool: ...


class ExistingConnections:
    def __init__(self, probes: ConnectionSeeder) -> None:
        self._probes = probes
        self._ids = itertools.count(SEEDED_ID_BASE)

    def seed(self, pid: int) -> int:
        """Tell the kernel about pid's TCP sockets; returns the number of connections seeded."""
        table = procfs.read_tcp_table(pid)
        listening = procfs.listening_ports(table)
        seeded = 0
        for fd, sock in procfs.tcp_sockets_of(pid, table):
            if sock.state == procfs.TCP_LISTEN:
                self._probes.seed_listener(pid, fd, sock.family, sock.local_raw, sock.local.port)
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
            ):
                seeded += 1
        return seeded


class OwnTraffic:
    """The agent's own sockets, to drop exchanges whose peer is the agent (its exports)."""

    def __init__(self, refresh_interval_s: float = 1.0) -> None:
        self._process = psutil.Process()
        self._endpoints: set[SocketAddress] = set()
        self._interval = refresh_interval_s
        self._refreshed = 0.0

    def _refresh(self) -> None:
        self._refreshed = time.monotonic()
        try:
            connections = self._process.net_connections(kind="tcp")
        except psutil.Error:
            return
        self._endpoints = {SocketAddress(c.laddr.ip, c.laddr.port) for c in connections if c.laddr}

    def is_own(self, exchange: Exchange) -> bool:
        peer = exchange.peer
        if peer is None or exchange.role != Role.SERVER:
            return False
        if peer in self._endpoints:
            return True
        if time.monotonic() - self._refreshed >= self._interval:
            self._refresh()
            return peer in self._endpoints
        return False
