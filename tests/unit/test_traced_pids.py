"""The traced processes as user space writes them: a real mmap-able BPF array of PID_LIMIT
bytes, read back through the bpf() system call as the probes' loads would see it."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator

import pytest

from otelbpf.abi import PID_LIMIT
from otelbpf.probes import bpf_calls
from otelbpf.probes.maps import BpfMap
from otelbpf.probes.traced_pids import TracedPids

BPF_MAP_TYPE_ARRAY = 2
BPF_F_MMAPABLE = 1 << 10


@pytest.fixture
def traced() -> Iterator[tuple[BpfMap, TracedPids]]:
    values = PID_LIMIT // 8  # as in agent.c: eight bytes to an array value
    fd = bpf_calls.create_map(BPF_MAP_TYPE_ARRAY, "traced_test", 4, 8, values, BPF_F_MMAPABLE)
    array = BpfMap("traced_test", fd, BPF_MAP_TYPE_ARRAY, ctypes.c_uint32, ctypes.c_uint64, 4, 8)
    pids = TracedPids(fd)
    yield array, pids
    os.close(fd)


def kernel_byte(array: BpfMap, pid: int) -> int:
    """The byte the probes' traced_byte() loads for pid."""
    return (array[pid >> 3].value >> (8 * (pid & 7))) & 0xFF


def test_each_pid_is_its_own_byte(traced: tuple[BpfMap, TracedPids]) -> None:
    array, pids = traced
    neighbours = [1, 2, 7, 8, 9, 4242, PID_LIMIT - 1]
    for pid in neighbours:
        pids.allow(pid)
    for pid in neighbours:
        assert pid in pids and kernel_byte(array, pid) == 1
    for pid in (3, 6, 10, 4241, 4243, PID_LIMIT - 2):
        assert pid not in pids and kernel_byte(array, pid) == 0
    pids.forget(8)
    assert kernel_byte(array, 8) == 0 and 8 not in pids
    assert kernel_byte(array, 7) == kernel_byte(array, 9) == 1  # the neighbours stay


def test_a_byte_the_kernel_wrote_is_read(traced: tuple[BpfMap, TracedPids]) -> None:
    array, pids = traced
    array[1234 >> 3] = 1 << (8 * (1234 & 7))  # allow() in a fork hook
    assert 1234 in pids and 1233 not in pids and 1235 not in pids


def test_no_page_stays_mapped(traced: tuple[BpfMap, TracedPids]) -> None:
    """Keeping the 4 MiB mapped would count them in the agent's RSS."""
    _, pids = traced
    before = bpf_mappings()
    pids.allow(4242)
    assert 4242 in pids
    assert bpf_mappings() == before


def bpf_mappings() -> int:
    with open("/proc/self/maps") as maps:
        return maps.read().count("bpf-map")


def test_a_pid_beyond_the_limit_is_refused(traced: tuple[BpfMap, TracedPids]) -> None:
    _, pids = traced
    for pid in (0, -1, PID_LIMIT):
        with pytest.raises(ValueError, match="outside"):
            pids.allow(pid)
