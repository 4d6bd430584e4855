"""The kernel's set of traced processes, a byte per pid, written through mmap.

bpf/agent.c checks a process's byte in the traced_pids array first in every probe (one load
the JIT inlines, where a hash map took a lookup on every read and write of every process).
The agent's selection writes the bytes here, with no system call; the kernel's fork and exec
hooks write them too. Either side stores one byte, which leaves its neighbours alone.
"""

from __future__ import annotations

import mmap

from otelbpf.abi import PID_LIMIT


class TracedPids:
    def __init__(self, map_fd: int) -> None:
        self._view = mmap.mmap(map_fd, PID_LIMIT, mmap.MAP_SHARED)

    def allow(self, pid: int) -> None:
        self._view[self._index(pid)] = 1

    def forget(self, pid: int) -> None:
        self._view[self._index(pid)] = 0

    def __contains__(self, pid: int) -> bool:
        return self._view[self._index(pid)] != 0

    @staticmethod
    def _index(pid: int) -> int:
        if not 0 < pid < PID_LIMIT:
            raise ValueError(f"pid {pid} is outside 1..{PID_LIMIT - 1}")
        return pid

    def close(self) -> None:
        self._view.close()
