"""Which way the socket calls are hooked on this kernel: kprobes or syscall tracepoints.

Decided once at start-up by looking at what the kernel offers, logged, and overridable with
--probe-mode. Kprobes on the syscall functions are preferred where they exist: syscall
tracepoints put every syscall of every task on the tracing slow path, while a kprobe costs
only the calls it is attached to. Kernels built without CONFIG_KPROBES (like the one these
tests run on) get the tracepoint path.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from otelbpf.errors import SetupError

KPROBE_PMU = "/sys/bus/event_source/devices/kprobe/type"
TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class ProbeMode(enum.Enum):
    KPROBE = "kprobe"
    TRACEPOINT = "tracepoint"


@dataclass(frozen=True)
class ProbeChoice:
    mode: ProbeMode
    reason: str


def kprobes_available() -> bool:
    if os.path.exists(KPROBE_PMU):
        return True
    return any(os.path.exists(f"{root}/kprobe_events") for root in TRACEFS_ROOTS)


def syscall_tracepoints_available() -> bool:
    return any(os.path.isdir(f"{root}/events/syscalls") for root in TRACEFS_ROOTS)


def choose_probe_mode(forced: str | None = None) -> ProbeChoice:
    has_kprobes = kprobes_available()
    has_tracepoints = syscall_tracepoints_available()
    if forced == ProbeMode.KPROBE.value:
        if not has_kprobes:
            raise SetupError(
                "--probe-mode kprobe was asked for, but this kernel has no kprobes "
                "(built without CONFIG_KPROBES: no kprobe PMU, no kprobe_events)",
                "use --probe-mode tracepoint, or leave --probe-mode out to choose automatically",
            )
        return ProbeChoice(ProbeMode.KPROBE, "forced by --probe-mode")
    if forced == ProbeMode.TRACEPOINT.value:
        if not has_tracepoints:
            raise SetupError(
                "--probe-mode tracepoint was asked for, but this kernel has no syscall "
                "tracepoints (CONFIG_FTRACE_SYSCALLS)",
                "use --probe-mode kprobe, or leave --probe-mode out",
            )
        return ProbeChoice(ProbeMode.TRACEPOINT, "forced by --probe-mode")
    if has_kprobes:
        return ProbeChoice(ProbeMode.KPROBE, "kernel has kprobes: hooks only the calls traced")
    if has_tracepoints:
        return ProbeChoice(ProbeMode.TRACEPOINT, "kernel has no kprobes: using syscall tracepoints")
    raise SetupError(
        "this kernel has neither kprobes nor syscall tracepoints to hook socket calls with",
        "use a kernel built with CONFIG_KPROBES or CONFIG_FTRACE_SYSCALLS",
    )
