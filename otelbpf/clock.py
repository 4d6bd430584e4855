"""Kernel time to wall-clock time: one offset, measured once at start-up.

bpf_ktime_get_ns() reads CLOCK_MONOTONIC; spans need the epoch. The offset is sampled a few
times and the sample with the tightest bracket is kept.
"""

from __future__ import annotations

import time


class MonotonicToWall:
    def __init__(self, samples: int = 5) -> None:
        best_width, best_offset = None, 0
        for _ in range(samples):
            before = time.monotonic_ns()
            wall = time.time_ns()
            after = time.monotonic_ns()
            width = after - before
            if best_width is None or width < best_width:
                best_width, best_offset = width, wall - (before + after) // 2
        self.offset_ns = best_offset

    def to_wall(self, monotonic_ns: int) -> int:
        return monotonic_ns + self.offset_ns
