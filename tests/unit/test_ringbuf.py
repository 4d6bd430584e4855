"""The shared-memory ring buffer reader against the kernel's own ring buffer.

A small BPF program writes numbered records of varying sizes (and reserves some it then
discards) when this test process calls getppid() and getuid(); the reader must hand back
exactly the records kept, in order, byte for byte, across many wrap-arounds of a one-page ring
and after the ring has filled and dropped.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import pytest

from otelbpf.probes import ringbuf
from tests.unit.bcc_env import bcc_compiling, skip_reason


def _skip_reason() -> str | None:
    if not ringbuf.supported():
        return "the shared-memory reader is used on x86-64 only; libbpf's reader elsewhere"
    return skip_reason()


_SKIP = _skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")

RING_PAGES = 1
MAX_DATA = 200

PROGRAM = r"""
struct record {
    u32 seq;
    u32 size;
    u8 data[MAX_DATA];
};
BPF_RINGBUF_OUTPUT(ring, RING_PAGES);
BPF_ARRAY(sequence, u32, 1);
BPF_PERCPU_ARRAY(scratch, struct record, 1);

static __always_inline u32 next_seq(void) {
    int zero = 0;
    u32 *seq = sequence.lookup(&zero);
    if (!seq)
        return 0;
    return (*seq)++;
}

/* variable sizes: every padding remainder, and records that wrap */
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET)
        return 0;
    int zero = 0;
    struct record *r = scratch.lookup(&zero);
    if (!r)
        return 0;
    u32 seq = next_seq();
    r->seq = seq;
    for (int i = 0; i < MAX_DATA; i++)
        r->data[i] = (u8)(seq + i);
    /* masks, which the verifier follows (a modulo it does not): 8..198 bytes */
    u64 size = 8 + ((seq * 37) & 127) + ((seq >> 3) & 63);
    r->size = size;
    ring.ringbuf_output(r, size, BPF_RB_NO_WAKEUP);
    return 0;
}

/* reserved in place, then every third one discarded */
TRACEPOINT_PROBE(syscalls, sys_enter_getuid) {
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET)
        return 0;
    u32 seq = next_seq();
    struct record *r = ring.ringbuf_reserve(sizeof(struct record));
    if (!r)
        return 0;
    r->seq = seq;
    r->size = sizeof(struct record);
    for (int i = 0; i < MAX_DATA; i++)
        r->data[i] = (u8)(seq + i);
    if (seq % 3 == 0)
        ring.ringbuf_discard(r, 0);
    else
        ring.ringbuf_submit(r, 0);
    return 0;
}
"""


@pytest.fixture(scope="module")
def producer() -> Iterator[object]:
    with bcc_compiling() as bcc:
        bpf = bcc.BPF(
            text=PROGRAM.encode(),
            cflags=[
                f"-DTARGET={os.getpid()}",
                f"-DRING_PAGES={RING_PAGES}",
                f"-DMAX_DATA={MAX_DATA}",
            ],
        )
    yield bpf
    bpf.cleanup()


@pytest.fixture
def reader(producer: object) -> Iterator[tuple[ringbuf.MappedRingBuffer, list[bytes]]]:
    received: list[bytes] = []
    ring = ringbuf.MappedRingBuffer(
        producer[b"ring"].map_fd, RING_PAGES * os.sysconf("SC_PAGE_SIZE"), received.append
    )
    ring.consume()  # whatever an earlier test left
    received.clear()
    yield ring, received
    ring.close()


def _check(record: bytes) -> int:
    seq, size = struct.unpack_from("<II", record)
    assert len(record) == size
    assert record[8:] == bytes((seq + i) & 0xFF for i in range(size - 8))
    return seq


def test_variable_sized_records_across_many_wrap_arounds(reader) -> None:
    ring, received = reader
    seqs: list[int] = []
    all_records: list[bytes] = []
    for _ in range(60):  # ~10 records of ~110 bytes a round: the page wraps every 3-4 rounds
        for _ in range(10):
            os.getppid()
        assert ring.consume() == 10
        seqs += [_check(record) for record in received]
        all_records += received
        received.clear()
    assert len(seqs) == 600
    assert seqs == list(range(seqs[0], seqs[0] + 600))
    sizes = {len(record) for record in all_records}
    assert {size % 8 for size in sizes} == set(range(8))


def test_discarded_records_are_skipped(reader) -> None:
    ring, received = reader
    for _ in range(30):
        for _ in range(6):
            os.getuid()
        ring.consume()
    seqs = [_check(record) for record in received]
    assert len(seqs) == 120  # 180 reserved, one in three discarded
    assert all(seq % 3 != 0 for seq in seqs)
    assert seqs == sorted(seqs)


def test_a_full_ring_drops_then_resumes(reader) -> None:
    ring, received = reader
    for _ in range(200):  # ~22 KB into a 4 KiB ring: most are dropped by the kernel
        os.getppid()
    kept = ring.consume()
    assert 0 < kept < 200
    first = [_check(record) for record in received]
    assert first == list(range(first[0], first[0] + kept))  # the oldest kept, in order
    received.clear()
    for _ in range(5):
        os.getppid()
    assert ring.consume() == 5
    assert [_check(record) for record in received][0] == first[0] + 200  # numbers went on


def test_poll_returns_on_the_timeout_and_delivers_what_is_ready(reader) -> None:
    ring, received = reader
    for _ in range(3):
        os.getppid()  # written without a wake-up
    ring.poll(50)
    assert len(received) == 3
    ring.poll(10)  # nothing new: returns after the timeout
    assert len(received) == 3


def test_sizes_that_are_not_a_ring(producer) -> None:
    with pytest.raises(ValueError, match="power-of-two number of pages"):
        ringbuf.MappedRingBuffer(producer[b"ring"].map_fd, 3000, print)
