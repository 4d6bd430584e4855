"""The kernel <-> user ABI: a ctypes mirror of bpf/otelbpf.h.

The decode stage of the pipe reads ring-buffer records through these structs. Head sizes are
compile-time settings of the BPF program, so the exchange structs are built per size by
`AbiLayout`. tests/unit/test_abi.py compiles the header with bcc and checks that every size
and offset here matches the C.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
HEADER_PATH = BPF_DIR / "otelbpf.h"
AGENT_SOURCE = BPF_DIR / "agent.c"  # the programs; otelbpf.h has the shared structs

TASK_COMM_LEN = 16
EXEC_FILENAME_SIZE = 256
FLUSH_QUEUE_SIZE = 64
PID_LIMIT = 1 << 22  # traced_pids has a byte for each pid below it (the kernel's PID_MAX_LIMIT)
FLUSH_NO_SLOT = 0xFFFFFFFF  # a flush request not named by an answered slot


class EventType(enum.IntEnum):
    EXCHANGE = 1
    EXEC = 2
    FORK = 3
    EXIT = 4
    MMAP_EXEC = 5
    H2_CHUNK = 6
    ADDRESS_REQUEST = 7
    AGENT_CONNECT = 8


class Role(enum.IntEnum):
    UNKNOWN = 0
    CLIENT = 1
    SERVER = 2


class Phase(enum.IntEnum):
    IDLE = 0
    REQUEST = 1
    RESPONSE = 2


class ExchangeFlag(enum.IntFlag):
    ROLE_INFERRED = 0x1
    NO_RESPONSE = 0x2
    CLOSED = 0x4
    IDLE = 0x8
    SEEDED = 0x10
    TLS = 0x20
    CHUNK_CLOSED = 0x40  # h2 chunk events only: the connection closed
    CHUNK_ELIDED = 0x80  # h2 chunk events: frames walked in the kernel, DATA payloads left out
    CHUNK_WALK_LOST = 0x100  # h2 chunk events: the walk lost its place in this syscall


class Counter(enum.IntEnum):
    EVENTS = 0
    DROPS = 1
    CONN_FULL = 2
    ORPHAN_BYTES = 3
    TLS_UNBOUND = 4


COUNTER_MAX = 5


class Setting(enum.IntEnum):
    TRACE_ALL = 0
    IDLE_NS = 1
    FLUSH_COUNT = 2
    PORT_FILTER = 3
    AGENT_TGID = 4
    SEEDED_CALLS = 5


class Endpoint(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint8 * 16),
        ("port", ctypes.c_uint16),
        ("family", ctypes.c_uint16),
        ("_pad", ctypes.c_uint32),
    ]


class ProcessEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("comm", ctypes.c_char * TASK_COMM_LEN),
        ("filename", ctypes.c_char * EXEC_FILENAME_SIZE),
    ]


class H2ChunkHeader(ctypes.Structure):
    """struct h2_chunk_event up to its data[]: the record holds copied_len bytes after it."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("fd", ctypes.c_uint32),
        ("role", ctypes.c_uint8),
        ("dir", ctypes.c_uint8),
        ("_pad0", ctypes.c_uint8 * 2),
        ("conn_id", ctypes.c_uint64),
        ("ts_ns", ctypes.c_uint64),
        ("total_len", ctypes.c_uint32),
        ("copied_len", ctypes.c_uint32),
        ("local", Endpoint),
        ("peer", Endpoint),
        ("comm", ctypes.c_char * TASK_COMM_LEN),
    ]


H2_CHUNK_SIZE = 8192


class AddressRequest(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("conn_id", ctypes.c_uint64),
    ]


class FlushRequest(ctypes.Structure):
    _fields_ = [
        ("conn_key", ctypes.c_uint64),
        ("force", ctypes.c_uint32),
        ("slot", ctypes.c_uint32),
    ]


class CommKey(ctypes.Structure):
    _fields_ = [("comm", ctypes.c_char * TASK_COMM_LEN)]


class IoArgs(ctypes.Structure):
    _fields_ = [
        ("conn_key", ctypes.c_uint64),
        ("buf", ctypes.c_uint64),  # a user-space pointer
        ("iovcnt", ctypes.c_uint64),
        ("kind", ctypes.c_uint8),
        ("dir", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 2),
        ("nr", ctypes.c_int32),
    ]


class ThreadState(ctypes.Structure):
    """struct thread_state: user space writes one to seed a thread blocked in a read."""

    _fields_ = [
        ("io", IoArgs),
        ("tls_session", ctypes.c_uint64),
        ("last_read_fd", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
    ]


class SocketFacts(ctypes.Structure):
    """struct socket_facts: user space writes one for a listener found in /proc."""

    _fields_ = [
        ("bound", Endpoint),
        ("type", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class AcceptArgs(ctypes.Structure):
    _fields_ = [
        ("listen_fd", ctypes.c_uint64),
        ("peer_addr", ctypes.c_uint64),  # a user-space pointer
        ("nr", ctypes.c_int64),
    ]


def _exchange_fields(request_size: int, response_size: int) -> list[tuple[str, type]]:
    return [
        *_header_fields(),
        ("request", ctypes.c_uint8 * request_size),
        ("response", ctypes.c_uint8 * response_size),
    ]


def _header_fields() -> list[tuple[str, type]]:
    return [
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("fd", ctypes.c_uint32),
        ("role", ctypes.c_uint8),
        ("_pad0", ctypes.c_uint8 * 3),
        ("conn_id", ctypes.c_uint64),
        ("start_ns", ctypes.c_uint64),
        ("end_ns", ctypes.c_uint64),
        ("request_bytes", ctypes.c_uint64),
        ("response_bytes", ctypes.c_uint64),
        ("local", Endpoint),
        ("peer", Endpoint),
        ("comm", ctypes.c_char * TASK_COMM_LEN),
        ("request_len", ctypes.c_uint32),
        ("response_len", ctypes.c_uint32),
    ]


class ExchangeHeader(ctypes.Structure):
    """struct exchange_event up to its heads: the ring-buffer record holds request_len request
    bytes and then response_len response bytes after it."""

    _fields_ = _header_fields()


MAX_HEAD_SIZE = 8192  # an event of both heads stays under the size mask in emit_exchange


def _check_head_size(name: str, size: int) -> None:
    if size < 64 or size > MAX_HEAD_SIZE or size & (size - 1):
        raise ValueError(f"{name} must be a power of two from 64 to {MAX_HEAD_SIZE}, not {size}")


@dataclass(frozen=True)
class AbiLayout:
    """The structs whose layout depends on the head sizes the BPF program was built with."""

    request_head_size: int = 1024
    response_head_size: int = 512

    def __post_init__(self) -> None:
        _check_head_size("request head size", self.request_head_size)
        _check_head_size("response head size", self.response_head_size)

    @cached_property
    def exchange_event(self) -> type[ctypes.Structure]:
        fields = _exchange_fields(self.request_head_size, self.response_head_size)
        return type("ExchangeEvent", (ctypes.Structure,), {"_fields_": fields})

    @cached_property
    def conn_state(self) -> type[ctypes.Structure]:
        slack = max(self.request_head_size, self.response_head_size)
        fields = [
            ("ev", self.exchange_event),
            ("phase", ctypes.c_uint8),
            ("tls", ctypes.c_uint8),
            ("h2", ctypes.c_uint8),
            ("_pad", ctypes.c_uint8 * 5),
            ("sk", ctypes.c_uint64),
            ("h2_skip", ctypes.c_uint32 * 2),
            ("h2_keep", ctypes.c_uint32 * 2),
            ("h2_header", ctypes.c_uint8 * 48),
            ("h2_header_have", ctypes.c_uint8 * 2),
            ("_pad2", ctypes.c_uint8 * 6),
            ("_slack", ctypes.c_uint8 * slack),
        ]
        return type("ConnState", (ctypes.Structure,), {"_fields_": fields})

    @property
    def cflags(self) -> list[str]:
        return [
            f"-DREQUEST_HEAD_SIZE={self.request_head_size}",
            f"-DRESPONSE_HEAD_SIZE={self.response_head_size}",
        ]


def conn_key(pid: int, fd: int) -> int:
    """The conns map key: (pid << 32) | fd, as conn_key_of() builds it in the kernel."""
    return (pid << 32) | (fd & 0xFFFFFFFF)
