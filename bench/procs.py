"""Process facts from /proc (CPU time, memory) and the processes the bench owns."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all its threads, live and exited), in seconds.

    Returns 0.0 when the process is gone. /proc/PID/stat of a thread-group leader sums the
    times of every thread in the group.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct children of pid (from each thread's children list)."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):
                found += [int(x) for x in (task / "children").read_text().split()]
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of pid and its direct children (nginx: master + workers)."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children(pid))


def status_kib(pid: int, field: str) -> int | None:
    """A kB field of /proc/PID/status (VmRSS, VmHWM), or None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def bpf_map_kib(pid: int) -> int | None:
    """Kernel memory held by the BPF maps the process has open: each map's memlock figure
    from /proc/PID/fdinfo, a map open on several descriptors counted once (the ring buffer,
    mmap'd, is one). Not in RSS; charged to the process's memory cgroup. None when gone."""
    held: dict[int, int] = {}
    try:
        fdinfo = Path(f"/proc/{pid}/fdinfo")
        for entry in fdinfo.iterdir():
            try:
                fields = dict(
                    line.split(":", 1) for line in entry.read_text().splitlines() if ":" in line
                )
            except (FileNotFoundError, ProcessLookupError):
                continue  # a descriptor closed meanwhile
            if "map_id" in fields and "memlock" in fields:
                held[int(fields["map_id"])] = int(fields["memlock"])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return sum(held.values()) >> 10


@dataclass
class CpuWindow:
    """CPU seconds a set of processes used between start() and stop()."""

    pids: dict[str, int]
    tree: bool = False
    _start: dict[str, float] | None = None
    used: dict[str, float] | None = None

    def _read(self) -> dict[str, float]:
        read = tree_cpu_seconds if self.tree else cpu_seconds
        return {name: read(pid) for name, pid in self.pids.items()}

    def start(self) -> CpuWindow:
        self._start = self._read()
        return self

    def stop(self) -> dict[str, float]:
        end = self._read()
        assert self._start is not None
        self.used = {name: end[name] - self._start[name] for name in self.pids}
        return self.used


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    """Signal one process we started, by its pid, and reap it; kill it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
