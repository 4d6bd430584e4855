"""Which processes are traced: --pid, --port and --exe selectors, combined as a union.

No selector means every process but the agent. --pid children and --port users are also
selected in the kernel (fork inheritance, connect/bind on the port); --exe is matched here,
on the exec notices the kernel sends and on a scan of /proc at start-up.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from dataclasses import dataclass, field

import psutil

from otelbpf import procfs
from otelbpf.errors import SetupError


@dataclass(frozen=True)
class Selectors:
    pids: tuple[int, ...] = ()
    ports: tuple[int, ...] = ()
    exe_globs: tuple[str, ...] = ()

    @property
    def trace_all(self) -> bool:
        return not (self.pids or self.ports or self.exe_globs)

    @property
    def exact_names(self) -> tuple[str, ...]:
        """--exe selectors the kernel can match at exec: plain names of a process's comm
        (no wildcard, no path, at most 15 bytes: the kernel's comm is truncated there)."""
        return tuple(
            glob
            for glob in self.exe_globs
            if not any(c in glob for c in "*?[/") and 0 < len(glob.encode()) <= 15
        )


@dataclass
class ProcessSelector:
    selectors: Selectors
    agent_pid: int = field(default_factory=os.getpid)

    def exe_matches(self, exe_path: str, name: str = "") -> bool:
        if not self.selectors.exe_globs:
            return False
        candidates = [c for c in (exe_path, os.path.basename(exe_path), name) if c]
        return any(
            fnmatch.fnmatchcase(candidate, pattern)
            for pattern in self.selectors.exe_globs
            for candidate in candidates
        )

    def process_matches_exe(self, pid: int, fallback_name: str = "") -> bool:
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            exe = ""
        return self.exe_matches(exe, fallback_name)

    def initial_pids(self) -> set[int]:
        """The processes selected now. Raises SetupError for a --pid that does not exist."""
        selected: set[int] = set()
        for pid in self.selectors.pids:
            if not psutil.pid_exists(pid):
                raise SetupError(
                    f"--pid {pid}: no such process",
                    "check the pid (ps -ef), or select by --exe or --port to include processes "
                    "that start later",
                )
            selected.add(pid)
            # children that exist already; the kernel adds those forked from now on
            with contextlib.suppress(psutil.Error):
                selected.update(child.pid for child in psutil.Process(pid).children(recursive=True))
        for port in self.selectors.ports:
            selected |= procfs.pids_with_port(port)
        if self.selectors.exe_globs:
            for pid in procfs.all_pids():
                if self.process_matches_exe(pid):
                    selected.add(pid)
        selected.discard(self.agent_pid)
        return selected
