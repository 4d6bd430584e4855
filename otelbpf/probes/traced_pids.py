"""The kernel's set of traced processes, a byte per pid, written through mmap.

bpf/agent.c checks a process's byte in the traced_pids array first in every probe (one load
the JIT inlines, where a hash map took a lookup on every read and write of every process).
The agent's selection writes the bytes here, with no read-modify-write of the eight bytes
around one (the kernel's fork and exec hooks write bytes too, and a whole-value update through
bpf() could undo one of theirs): each call maps the one page that holds the pid's byte, stores
or loads that byte, and unmaps it. Keeping all 4 MiB mapped would count them in the agent's
RSS; the calls come with selection changes and exec notices, not with requests.
"""

from __future__ import annotations

import mmap

from otelbpf.abi import PID_LIMIT


class TracedPids:
    def __init__(self, map_fd: int) -> None:
        self._fd = map_fd

    def allow(self, pid: int) -> None:
        self._store(pid, 1)

    def forget(self, pid: int) -> None:
        self._store(pid, 0)

    def __contains__(self, pid: int) -> bool:
        page, at = self._page(pid)
        with page:
            return page[at] != 0

    def _store(self, pid: int, value: int) -> None:
        page, at = self._page(pid)
        with page:
            page[at] = value

    def _page(self, pid: int) -> tuple[mmap.mmap, int]:
        """The page of the array that holds pid's byte, mapped, and the byte's place in it."""
        if not 0 < pid < PID_LIMIT:
            raise ValueError(f"pid {pid} is outside 1..{PID_LIMIT - 1}")
        start = pid - pid % mmap.PAGESIZE
        return mmap.mmap(self._fd, mmap.PAGESIZE, mmap.MAP_SHARED, offset=start), pid - start
