"""Decode stage: raw ring-buffer records into Exchange objects and process notices.

The record's first u32 says what it is. Exchange records are read through the ctypes mirror
of the kernel struct (otelbpf.abi), with kernel timestamps moved to wall-clock time.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from dataclasses import dataclass
from functools import lru_cache

from otelbpf.abi import (
    AbiLayout,
    AddressRequest,
    Endpoint,
    EventType,
    ExchangeFlag,
    ExchangeHeader,
    H2ChunkHeader,
    ProcessEvent,
    Role,
)
from otelbpf.clock import MonotonicToWall
from otelbpf.exchange import Exchange, SocketAddress

_TYPE = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class H2Chunk:
    """Bytes one syscall moved on an HTTP/2 connection (copied up to the chunk size)."""

    pid: int
    tid: int
    fd: int
    conn_id: int
    role: Role
    to_server: bool  # direction on the wire: client -> server
    ts_ns: int  # wall clock
    total_len: int
    data: bytes
    tls: bool
    closed: bool
    elided: bool  # frames walked in the kernel: DATA payloads are not in data
    walk_lost: bool  # the kernel's walk lost its place partway through this syscall
    local: SocketAddress | None
    peer: SocketAddress | None
    comm: str = ""


@dataclass(frozen=True, slots=True)
class AddressNotice:
    """The kernel could not learn a new connection's addresses: read them from /proc now."""

    pid: int
    fd: int
    conn_id: int


@dataclass(frozen=True, slots=True)
class AgentConnectNotice:
    """The agent itself called connect(): its own sockets changed."""


@dataclass(frozen=True, slots=True)
class ProcessNotice:
    kind: EventType  # EXEC, FORK, EXIT or MMAP_EXEC
    pid: int
    ppid: int
    comm: str
    filename: str


def endpoint_address(endpoint: Endpoint) -> SocketAddress | None:
    if endpoint.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return _address(endpoint.family, bytes(endpoint.addr), endpoint.port)


@lru_cache(maxsize=4096)
def _address(family: int, raw: bytes, port: int) -> SocketAddress:
    """Two per event on the hot path, and a host talks to few peers: parsed once each."""
    if family == socket.AF_INET:
        return SocketAddress(str(ipaddress.IPv4Address(raw[:4])), port)
    address = ipaddress.IPv6Address(raw)
    return SocketAddress(str(address.ipv4_mapped or address), port)


class Decoder:
    def __init__(self, layout: AbiLayout, clock: MonotonicToWall) -> None:
        self._header_size = ctypes.sizeof(ExchangeHeader)
        self._process_size = ctypes.sizeof(ProcessEvent)
        self._chunk_header_size = ctypes.sizeof(H2ChunkHeader)
        self._clock = clock

    def decode(
        self, record: bytes
    ) -> Exchange | H2Chunk | ProcessNotice | AddressNotice | AgentConnectNotice | None:
        """None for a record too short for its type (counted by the caller)."""
        if len(record) < 4:
            return None
        kind = _TYPE.unpack_from(record)[0]
        if kind == EventType.EXCHANGE:
            if len(record) < self._header_size:
                return None
            return self._exchange(ExchangeHeader.from_buffer_copy(record), record)
        if kind == EventType.AGENT_CONNECT:
            return AgentConnectNotice()
        if kind == EventType.ADDRESS_REQUEST:
            if len(record) < ctypes.sizeof(AddressRequest):
                return None
            request = AddressRequest.from_buffer_copy(record)
            return AddressNotice(request.pid, request.fd, request.conn_id)
        if kind == EventType.H2_CHUNK:
            if len(record) < self._chunk_header_size:
                return None
            return self._h2_chunk(H2ChunkHeader.from_buffer_copy(record), record)
        if kind in (EventType.EXEC, EventType.FORK, EventType.EXIT, EventType.MMAP_EXEC):
            if len(record) < self._process_size:
                return None
            event = ProcessEvent.from_buffer_copy(record)
            return ProcessNotice(
                EventType(kind),
                event.pid,
                event.ppid,
                event.comm.decode(errors="replace"),
                event.filename.decode(errors="replace"),
            )
        return None

    def _h2_chunk(self, header: H2ChunkHeader, record: bytes) -> H2Chunk:
        start = self._chunk_header_size
        data = record[start : start + header.copied_len]
        role = Role(header.role)
        # the process read these bytes (dir 1) or wrote them (dir 0)
        to_server = (header.dir == 1) == (role == Role.SERVER)
        return H2Chunk(
            pid=header.pid,
            tid=header.tid,
            fd=header.fd,
            conn_id=header.conn_id,
            role=role,
            to_server=to_server,
            ts_ns=self._clock.to_wall(header.ts_ns),
            total_len=header.total_len,
            data=data,
            tls=bool(header.flags & ExchangeFlag.TLS),
            closed=bool(header.flags & ExchangeFlag.CHUNK_CLOSED),
            elided=bool(header.flags & ExchangeFlag.CHUNK_ELIDED),
            walk_lost=bool(header.flags & ExchangeFlag.CHUNK_WALK_LOST),
            local=endpoint_address(header.local),
            peer=endpoint_address(header.peer),
            comm=header.comm.decode(errors="replace"),
        )

    def _exchange(self, event: ExchangeHeader, record: bytes) -> Exchange | None:
        """The fixed fields, then request_len request bytes, then response_len response bytes."""
        to_wall = self._clock.to_wall
        start = to_wall(event.start_ns)
        end = to_wall(event.end_ns) if event.end_ns else start
        request_end = self._header_size + event.request_len
        response_end = request_end + event.response_len
        if response_end > len(record):
            return None  # a record shorter than it says: counted as malformed
        return Exchange(
            pid=event.pid,
            tid=event.tid,
            fd=event.fd,
            conn_id=event.conn_id,
            role=Role(event.role),
            flags=ExchangeFlag(event.flags),
            start_ns=start,
            end_ns=end,
            request_bytes=event.request_bytes,
            response_bytes=event.response_bytes,
            local=endpoint_address(event.local),
            peer=endpoint_address(event.peer),
            comm=event.comm.decode(errors="replace"),
            request_head=record[self._header_size : request_end],
            response_head=record[request_end:response_end],
        )
