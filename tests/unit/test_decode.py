"""The exchange decoder against the ctypes reading it replaced.

Exchange headers are read with one struct.unpack_from laid out from the ctypes mirror of
the kernel struct; the reference below reads them through ctypes, field by field. Both must
give the same Exchange (or the same None, or the same error) for any record.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from otelbpf.abi import (
    AbiLayout,
    Endpoint,
    EventType,
    ExchangeFlag,
    ExchangeHeader,
    H2ChunkHeader,
    ProcessEvent,
    Role,
)
from otelbpf.clock import MonotonicToWall
from otelbpf.decode import Decoder, _flat_fields, _struct_reader
from otelbpf.exchange import Exchange, SocketAddress

HEADER_SIZE = ctypes.sizeof(ExchangeHeader)


class FixedClock(MonotonicToWall):
    def __init__(self, offset_ns: int) -> None:
        self.offset_ns = offset_ns


def reference_address(endpoint: Endpoint) -> SocketAddress | None:
    if endpoint.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    raw = bytes(endpoint.addr)
    if endpoint.family == socket.AF_INET:
        return SocketAddress(str(ipaddress.IPv4Address(raw[:4])), endpoint.port)
    address = ipaddress.IPv6Address(raw)
    return SocketAddress(str(address.ipv4_mapped or address), endpoint.port)


def reference_exchange(record: bytes, clock: MonotonicToWall) -> Exchange | None:
    if len(record) < HEADER_SIZE:
        return None
    event = ExchangeHeader.from_buffer_copy(record)
    start = clock.to_wall(event.start_ns)
    end = clock.to_wall(event.end_ns) if event.end_ns else start
    request_end = HEADER_SIZE + event.request_len
    response_end = request_end + event.response_len
    if response_end > len(record):
        return None
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
        local=reference_address(event.local),
        peer=reference_address(event.peer),
        comm=event.comm.decode(errors="replace"),
        request_head=record[HEADER_SIZE:request_end],
        response_head=record[request_end:response_end],
    )


def _outcome(decode, record: bytes) -> object:
    try:
        return decode(record)
    except Exception as error:  # the same failure, on the same input
        return type(error)


_FAMILIES = st.sampled_from([socket.AF_INET, socket.AF_INET6, 0, socket.AF_UNIX])
_ADDRESSES = st.sampled_from(
    [
        bytes([10, 0, 0, 5]) + bytes(12),
        bytes([127, 0, 0, 1]) + b"\xff" * 12,
        socket.inet_pton(socket.AF_INET6, "2001:db8::7"),
        bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1]),
        bytes(16),
    ]
)
_COMMS = st.sampled_from([b"nginx", b"", b"a" * 16, b"ab\0cd", b"\xff\xfeq", "caf\u00e9".encode()])


@st.composite
def records(draw: st.DrawFn) -> bytes:
    event = ExchangeHeader.from_buffer_copy(draw(st.binary(min_size=HEADER_SIZE)))
    event.type = EventType.EXCHANGE
    event.role = draw(st.sampled_from([0, 1, 2, 3, 255]))
    event.flags = draw(st.sampled_from([0, 0x14, 0x20, 0x35, 0x1FF, 0xFFFFFFFF]))
    event.end_ns = draw(st.sampled_from([0, 1, 2**64 - 1]))
    for endpoint in (event.local, event.peer):
        endpoint.family = draw(_FAMILIES)
        ctypes.memmove(endpoint.addr, draw(_ADDRESSES), 16)
    event.comm = draw(_COMMS)
    request = draw(st.binary(max_size=40))
    response = draw(st.binary(max_size=40))
    event.request_len = len(request) + draw(st.sampled_from([0, 0, 1]))
    event.response_len = len(response)
    return bytes(event) + request + response + draw(st.binary(max_size=8))


@settings(max_examples=500, deadline=None)
@given(record=records(), cut=st.integers(min_value=0, max_value=400))
def test_exchange_decode_agrees_with_reference(record: bytes, cut: int) -> None:
    clock = FixedClock(1_700_000_000_000_000_000)
    decoder = Decoder(AbiLayout(), clock)
    for sample in (record, record[:cut]):
        for _ in range(2):  # the second time from the caches
            expected = _outcome(lambda r: reference_exchange(r, clock), sample)
            assert _outcome(decoder.decode, sample) == expected


def _flat_ctypes(struct_type: type[ctypes.Structure], prefix: str = "") -> dict[str, type]:
    flat: dict[str, type] = {}
    for name, ctype in struct_type._fields_:
        if issubclass(ctype, ctypes.Structure):
            flat.update(_flat_ctypes(ctype, f"{prefix}{name}."))
        else:
            flat[prefix + name] = ctype
    return flat


def _ctypes_value(struct_type: type[ctypes.Structure], name: str, buffer: bytes) -> object:
    value: object = struct_type.from_buffer_copy(buffer)
    for part in name.split("."):
        value = getattr(value, part)
    return bytes(value) if isinstance(value, ctypes.Array) else value


@given(data=st.data())
def test_struct_reader_reads_what_ctypes_reads(data: st.DataObject) -> None:
    for struct_type in (ExchangeHeader, H2ChunkHeader, ProcessEvent):
        ctypes_of = _flat_ctypes(struct_type)
        names = [name for _, _, name in _flat_fields(struct_type)]
        assert names == list(ctypes_of)
        buffer = data.draw(st.binary(min_size=ctypes.sizeof(struct_type)))
        values = _struct_reader(struct_type, names)(buffer)
        for name, value in zip(names, values, strict=True):
            if getattr(ctypes_of[name], "_type_", None) is ctypes.c_char:
                value = value.split(b"\0", 1)[0]  # ctypes stops at the first NUL, not the reader
            assert value == _ctypes_value(struct_type, name, buffer), name


def test_struct_reader_covers_the_whole_exchange_header() -> None:
    """Every byte of the header is a field or padding between fields: nothing is skipped
    by accident at the end, and the layout ends where the header does."""
    last_offset, last_code, _ = _flat_fields(ExchangeHeader)[-1]
    assert last_offset + struct.calcsize("=" + last_code) == HEADER_SIZE
