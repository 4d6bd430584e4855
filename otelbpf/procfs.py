"""What /proc says about processes and their TCP sockets.

Used where the kernel probes saw nothing: connections opened before the agent started (their
addresses and role), the listening sockets a --port selector names, and the sockets of a
process the agent starts tracing late. Every function tolerates processes that vanish while
they are being read.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from otelbpf.exchange import SocketAddress

TCP_ESTABLISHED = 0x01
TCP_LISTEN = 0x0A


@dataclass(frozen=True, slots=True)
class TcpSocket:
    inode: int
    local: SocketAddress
    remote: SocketAddress
    state: int
    family: int
    local_raw: bytes  # 16 bytes as the kernel's struct endpoint holds them
    remote_raw: bytes


def _decode_hex_address(text: str) -> tuple[str, int, bytes, int]:
    """'0100007F:1F90' -> ('127.0.0.1', 8080, raw, family).

    /proc prints the address as 32-bit words in host byte order.
    """
    host_hex, port_hex = text.split(":")
    words = bytes.fromhex(host_hex)
    raw = b"".join(words[i : i + 4][::-1] for i in range(0, len(words), 4))
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw)), int(port_hex, 16), raw + bytes(12), socket.AF_INET
    address = ipaddress.IPv6Address(raw)
    mapped = address.ipv4_mapped
    return str(mapped or address), int(port_hex, 16), raw, socket.AF_INET6


def read_tcp_table(pid: int | str = "self") -> dict[int, TcpSocket]:
    """TCP sockets of the network namespace that process pid lives in, keyed by inode."""
    table: dict[int, TcpSocket] = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if len(fields) < 10:
                        continue
                    local, lport, lraw, family = _decode_hex_address(fields[1])
                    remote, rport, rraw, _ = _decode_hex_address(fields[2])
                    inode = int(fields[9])
                    if inode:
                        table[inode] = TcpSocket(
                            inode=inode,
                            local=SocketAddress(local, lport),
                            remote=SocketAddress(remote, rport),
                            state=int(fields[3], 16),
                            family=family,
                            local_raw=lraw,
                            remote_raw=rraw,
                        )
        except (OSError, ValueError):
            continue
    return table


def socket_fds(pid: int) -> dict[int, int]:
    """fd -> socket inode for every socket the process holds."""
    fds: dict[int, int] = {}
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return fds
    for name in names:
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            fds[int(name)] = int(target[8:-1])
    return fds


def tcp_sockets_of(
    pid: int, table: dict[int, TcpSocket] | None = None
) -> Iterator[tuple[int, TcpSocket]]:
    """(fd, socket) for the TCP sockets process pid holds."""
    if table is None:
        table = read_tcp_table(pid)
    for fd, inode in socket_fds(pid).items():
        sock = table.get(inode)
        if sock is not None:
            yield fd, sock


def listening_ports(table: dict[int, TcpSocket]) -> set[int]:
    return {s.local.port for s in table.values() if s.state == TCP_LISTEN}


def command_name(pid: int) -> bytes:
    """The process's command name (/proc/PID/comm, as the kernel's comm: at most 15 bytes), or
    b"" when it is gone."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as file:
            return file.read().rstrip(b"\n")[:15]
    except OSError:
        return b""


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def pids_with_port(port: int) -> set[int]:
    """Processes that listen on port or hold a connection to it."""
    found: set[int] = set()
    tables: dict[str, dict[int, TcpSocket]] = {}
    for pid in all_pids():
        try:
            netns = os.readlink(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        table = tables.get(netns)
        if table is None:
            table = tables[netns] = {
                inode: s
                for inode, s in read_tcp_table(pid).items()
                if (s.state == TCP_LISTEN and s.local.port == port)
                or (s.state != TCP_LISTEN and s.remote.port == port)
            }
        if table and any(inode in table for inode in socket_fds(pid).values()):
            found.add(pid)
    return found
