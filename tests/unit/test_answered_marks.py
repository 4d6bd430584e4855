"""The answered marks as user space reads them: a real mmap-able BPF array, written through
the bpf() system call as the probes' stores would leave it."""

from __future__ import annotations

import ctypes
import os

from otelbpf.abi import AbiLayout
from otelbpf.probes import bpf_calls
from otelbpf.probes.answered import AnsweredMarks
from otelbpf.probes.loader import ProbeSettings
from otelbpf.probes.maps import BpfMap

BPF_MAP_TYPE_ARRAY = 2
BPF_F_MMAPABLE = 1 << 10


def make_marks(slots: int) -> tuple[int, BpfMap, AnsweredMarks]:
    fd = bpf_calls.create_map(BPF_MAP_TYPE_ARRAY, "answered_test", 4, 8, slots, BPF_F_MMAPABLE)
    array = BpfMap("answered_test", fd, BPF_MAP_TYPE_ARRAY, ctypes.c_uint32, ctypes.c_uint64, 4, 8)
    return fd, array, AnsweredMarks(fd, slots)


def test_marks_in_first_middle_and_last_slots_read_back_with_their_slots():
    fd, array, marks = make_marks(32768)
    try:
        assert marks.marked() == []
        written = {0: (7 << 32) | 3, 511: (7 << 32) | 4, 512: (9 << 32) | 11, 32767: 1 << 63}
        for slot, key in written.items():
            array[slot] = key
        assert sorted(marks.marked(), key=lambda mark: mark[1]) == [
            (key, slot) for slot, key in sorted(written.items())
        ]
        array[512] = 0  # a probe cleared it
        assert (9 << 32 | 11, 512) not in marks.marked()
        assert len(marks.marked()) == 3
    finally:
        marks.close()
        os.close(fd)


def test_a_mark_in_every_page():
    fd, array, marks = make_marks(4096)
    try:
        for slot in range(0, 4096, 500):
            array[slot] = slot + 1
        assert marks.marked() == [(slot + 1, slot) for slot in range(0, 4096, 500)]
    finally:
        marks.close()
        os.close(fd)


def test_slots_are_a_power_of_two_at_least_twice_the_connections():
    assert ProbeSettings(AbiLayout(), max_connections=16384).answered_slots == 32768
    assert ProbeSettings(AbiLayout(), max_connections=16).answered_slots == 32
    assert ProbeSettings(AbiLayout(), max_connections=1000).answered_slots == 2048
    assert ProbeSettings(AbiLayout(), max_connections=1).answered_slots == 2
