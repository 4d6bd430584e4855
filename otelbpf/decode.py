"""Decode stage: raw ring-buffer records into Exchange objects and process notices.

The record's first u32 says what it is. Exchange records are read through the ctypes mirror
of the kernel struct (otelbpf.abi), with kernel timestamps moved to wall-clock time: the
exchange header, one per request, in one struct.unpack_from call laid out from that mirror.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

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
_EXCHANGE = int(EventType.EXCHANGE)
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_ROLES = {int(role): role for role in Role}

# struct codes of the ctypes field types the kernel structs use (native byte order).
_STRUCT_CODES: dict[type, str] = {
    ctypes.c_uint8: "B",
    ctypes.c_uint16: "H",
    ctypes.c_uint32: "I",
    ctypes.c_uint64: "Q",
}


def _flat_fields(
    struct_type: type[ctypes.Structure], base: int = 0, prefix: str = ""
) -> list[tuple[int, str, str]]:
    """(offset, struct code, name) of every field, nested structures flattened ("local.port");
    byte and char arrays are one bytes value each. An unknown field type raises (KeyError)."""
    flat: list[tuple[int, str, str]] = []
    for name, ctype in struct_type._fields_:
        offset = base + getattr(struct_type, name).offset
        if issubclass(ctype, ctypes.Structure):
            flat += _flat_fields(ctype, offset, f"{prefix}{name}.")
        elif issubclass(ctype, ctypes.Array) and ctype._type_ in (ctypes.c_uint8, ctypes.c_char):
            flat.append((offset, f"{ctype._length_}s", prefix + name))
        else:
            flat.append((offset, _STRUCT_CODES[ctype], prefix + name))
    return flat


def _struct_reader(
    struct_type: type[ctypes.Structure], names: Sequence[str]
) -> Callable[[bytes], tuple[Any, ...]]:
    """A reader of the named fields of ``struct_type`` at the start of a buffer, as a tuple in
    the order of ``names``: one struct.unpack_from instead of a ctypes copy and an attribute
    read per field. A char array's value is all its bytes (ctypes stops at the first NUL)."""
    layout = ["="]  # native byte order, no alignment: the padding is spelled out
    index: dict[str, int] = {}
    position = 0
    for i, (offset, code, name) in enumerate(_flat_fields(struct_type)):
        if offset > position:
            layout.append(f"{offset - position}x")
        layout.append(code)
        index[name] = i
        position = offset + struct.calcsize("=" + code)
    unpack = struct.Struct("".join(layout)).unpack_from
    pick = itemgetter(*(index[name] for name in names))

    def read(buffer: bytes) -> tuple[Any, ...]:
        return pick(unpack(buffer))

    return read


_EXCHANGE_FIELDS = (
    "flags",
    "pid",
    "tid",
    "fd",
    "role",
    "conn_id",
    "start_ns",
    "end_ns",
    "request_bytes",
    "response_bytes",
    "local.family",
    "local.addr",
    "local.port",
    "peer.family",
    "peer.addr",
    "peer.port",
    "comm",
    "request_len",
    "response_len",
)
_read_exchange_header = _struct_reader(ExchangeHeader, _EXCHANGE_FIELDS)


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
    return _socket_address(endpoint.family, bytes(endpoint.addr), endpoint.port)


def _socket_address(family: int, raw: bytes, port: int) -> SocketAddress | None:
    """The address of an endpoint's fields, None unless IPv4 or IPv6."""
    if family not in _INET_FAMILIES:
        return None
    return _address(family, raw, port)


@lru_cache(maxsize=4096)
def _address(family: int, raw: bytes, port: int) -> SocketAddress:
    """Two per event on the hot path, and a host talks to few peers: parsed once each."""
    return SocketAddress(_host(family, raw), port)


@lru_cache(maxsize=4096)
def _host(family: int, raw: bytes) -> str:
    """Apart from _address: a peer's every new connection has a new port, not a new address."""
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    address = ipaddress.IPv6Address(raw)
    return str(address.ipv4_mapped or address)


@lru_cache(maxsize=1024)
def _exchange_flags(value: int) -> ExchangeFlag:
    """ExchangeFlag(value) goes through the enum machinery; a handful of values recur."""
    return ExchangeFlag(value)


@lru_cache(maxsize=1024)
def _comm(raw: bytes) -> str:
    """A task's comm as ctypes reads a char array: up to the first NUL; few of them recur."""
    return raw.split(b"\0", 1)[0].decode(errors="replace")


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
        if kind == _EXCHANGE:
            if len(record) < self._header_size:
                return None
            return self._exchange(record)
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

    def _exchange(self, record: bytes) -> Exchange | None:
        """The fixed fields, then request_len request bytes, then response_len response bytes."""
        (
            flags,
            pid,
            tid,
            fd,
            raw_role,
            conn_id,
            start_ns,
            end_ns,
            request_bytes,
            response_bytes,
            local_family,
            local_addr,
            local_port,
            peer_family,
            peer_addr,
            peer_port,
            comm,
            request_len,
            response_len,
        ) = _read_exchange_header(record)
        to_wall = self._clock.to_wall
        start = to_wall(start_ns)
        end = to_wall(end_ns) if end_ns else start
        request_end = self._header_size + request_len
        response_end = request_end + response_len
        if response_end > len(record):
            return None  # a record shorter than it says: counted as malformed
        role = _ROLES.get(raw_role)
        if role is None:
            role = Role(raw_role)  # raises ValueError, as a bad value always did
        # positional, in field order: half the cost of keywords, per exchange
        return Exchange(
            pid,
            tid,
            fd,
            conn_id,
            role,
            _exchange_flags(flags),
            start,
            end,
            request_bytes,
            response_bytes,
            _socket_address(local_family, local_addr, local_port),
            _socket_address(peer_family, peer_addr, peer_port),
            _comm(comm),
            record[self._header_size : request_end],
            record[request_end:response_end],
        )
