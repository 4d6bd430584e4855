"""The ring buffer's records read straight from its shared memory, every ready one per wake-up.

A BPF ring buffer map is three mappings of its descriptor: the consumer page (the reader's to
write: how far it has read), the producer page (the kernel's: how far it has written), and the
data pages, mapped twice in a row so that a record wrapping past the end reads as one slice.
Each record is an 8-byte header (its length, with a busy bit while the kernel still writes it
and a discard bit) and then its bytes, padded to 8.

libbpf's reader (bcc's bpf_poll_ringbuf) calls back into Python through ctypes once per
record: 12% of the agent's time at 4000 requests/s, the largest single item after encoding.
This one copies every ready record in one Python loop. Memory ordering: the kernel publishes a
record by clearing its busy bit after writing it, and reads the consumer position to reuse
space; on x86-64 loads are not reordered with loads, nor stores with stores (TSO), which is
all the acquire/release pairing this needs from plain loads and stores. Other machines keep
libbpf's reader (objects.LoadedObject.ring_buffer chooses).
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import select
import struct
from collections.abc import Callable

BUSY_BIT = 1 << 31  # BPF_RINGBUF_BUSY_BIT: the kernel is still writing the record
DISCARD_BIT = 1 << 30  # BPF_RINGBUF_DISCARD_BIT: the program dropped it after reserving
HEADER_SIZE = 8  # BPF_RINGBUF_HDR_SZ
LENGTH_MASK = ~(BUSY_BIT | DISCARD_BIT)
MACHINES = frozenset({"x86_64"})  # where plain loads and stores order as the protocol needs

_u32 = struct.Struct("<I")
_u64 = struct.Struct("<Q")


def supported() -> bool:
    return platform.machine() in MACHINES


class MappedRingBuffer:
    """Drains one ring buffer map into a Python callable; poll() waits for the kernel."""

    def __init__(self, map_fd: int, size: int, on_record: Callable[[bytes], None]) -> None:
        if size <= 0 or size & (size - 1) or size % mmap.PAGESIZE:
            raise ValueError(f"a ring buffer's size is a power-of-two number of pages, not {size}")
        page = mmap.PAGESIZE
        self._on_record = on_record
        self._mask = size - 1
        self._consumer_page = mmap.mmap(
            map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
        )
        self._producer_pages = mmap.mmap(
            map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._consumer = ctypes.c_uint64.from_buffer(self._consumer_page)
        self._data = memoryview(self._producer_pages)[page:]
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def poll(self, timeout_ms: int) -> None:
        """Wait until the kernel wakes the reader (or the timeout), then drain."""
        self._epoll.poll(timeout_ms / 1000)
        self.consume()

    def consume(self) -> int:
        """Hand every ready record to on_record, in order; returns how many."""
        data, mask, on_record = self._data, self._mask, self._on_record
        consumer = self._consumer
        position = consumer.value
        count = 0
        while True:
            produced = _u64.unpack_from(self._producer_pages, 0)[0]
            if position >= produced:
                return count
            while position < produced:
                at = position & mask
                header = _u32.unpack_from(data, at)[0]
                if header & BUSY_BIT:
                    return count  # still being written: the next poll gets it
                length = header & LENGTH_MASK
                start = at + HEADER_SIZE
                record = None if header & DISCARD_BIT else bytes(data[start : start + length])
                position += (length + HEADER_SIZE + 7) & ~7
                consumer.value = position  # the kernel may reuse the space from here
                if record is not None:
                    on_record(record)
                    count += 1

    def close(self) -> None:
        if self._epoll.closed:
            return
        self._epoll.close()
        # the views into the mappings go first: a mapping with live views cannot be closed
        self._data.release()
        del self._consumer
        self._producer_pages.close()
        self._consumer_page.close()
