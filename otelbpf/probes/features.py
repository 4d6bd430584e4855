"""Which way the socket calls are hooked on this kernel: socket tracepoints, kprobes or
syscall tracepoints.

Decided once at start-up by looking at what the kernel offers, logged, and overridable with
--probe-mode. Socket tracepoints are preferred where the kernel has them (sock:sock_send_length
and sock_recv_length, which sendfile() reaches from Linux 6.5, with BTF and bpf_task_pt_regs,
on x86-64): they fire
only for socket sends and receives, and no system call is hooked. Next kprobes on the syscall
functions, which cost only the calls they are attached to. Last syscall tracepoints: while any
has a program, every system call of every task takes the kernel's slow path.
"""

from __future__ import annotations

import enum
import logging
import os
import platform
import re
import struct
from dataclasses import dataclass

from otelbpf.config import OTELBPF_IO_ARGS
from otelbpf.errors import SetupError

log = logging.getLogger(__name__)

KPROBE_PMU = "/sys/bus/event_source/devices/kprobe/type"
TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class ProbeMode(enum.Enum):
    SOCKET = "socket"  # sock: and inet_sock_set_state tracepoints, no system call hooked
    KPROBE = "kprobe"
    TRACEPOINT = "tracepoint"


# The tracepoints socket mode attaches, each with its program in bpf/agent.c.
SOCKET_TRACEPOINT_PROGRAMS = {
    "sock:sock_send_length": "sk_io",  # data sent on a socket
    "sock:sock_recv_length": "sk_io",  # data received
    "sock:inet_sock_set_state": "sk_state",  # connect, listen, accept, close
}
# sendfile() reaches the socket's sendmsg (and so sock_send_length) from Linux 6.5; before,
# it went through ->sendpage, unseen by the tracepoint. (sock_send_length itself is 6.3's.)
SOCKET_MODE_KERNEL = (6, 5)


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


def socket_tracepoints_missing() -> str | None:
    """Why socket mode cannot run here, or None when it can."""
    if platform.machine() != "x86_64":  # the user registers' offsets in agent.c are x86-64's
        return "not x86-64"
    release = tuple(int(n) for n in re.findall(r"\d+", platform.release())[:2])
    if release < SOCKET_MODE_KERNEL:
        return f"Linux {platform.release()}: sendfile() is seen from 6.5"
    roots = [root for root in TRACEFS_ROOTS if os.path.isdir(f"{root}/events")]
    for tracepoint in SOCKET_TRACEPOINT_PROGRAMS:
        event = tracepoint.replace(":", "/")
        if not any(os.path.isdir(f"{root}/events/{event}") for root in roots):
            return f"no {tracepoint} tracepoint"
    if not task_pt_regs_available():
        return "no bpf_task_pt_regs (BTF, Linux 5.15)"
    from otelbpf.probes import kernel_layout

    if not kernel_layout.cflags():  # (which logs why)
        return "the kernel's BTF does not give struct sock's layout"
    return None


def choose_probe_mode(forced: str | None = None) -> ProbeChoice:
    if forced is not None and forced not in {mode.value for mode in ProbeMode}:
        raise SetupError(
            f"probe mode {forced!r} is not one of {', '.join(m.value for m in ProbeMode)}",
            "set --probe-mode or OTELBPF_PROBE_MODE to one of them, or leave both out",
        )
    if forced == ProbeMode.SOCKET.value:
        missing = socket_tracepoints_missing()
        if missing is not None:
            raise SetupError(
                f"--probe-mode socket was asked for, but this kernel cannot run it: {missing}",
                "use --probe-mode tracepoint or kprobe, or leave --probe-mode out",
            )
        return ProbeChoice(ProbeMode.SOCKET, "forced by --probe-mode")
    if forced is None:
        missing = socket_tracepoints_missing()
        if missing is None:
            return ProbeChoice(
                ProbeMode.SOCKET, "kernel has socket tracepoints and BTF: no system call hooked"
            )
        log.info("socket tracepoints not used: %s", missing)
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


# A tracepoint program that asks for the current task's user registers: the kernel accepts it
# where it has BTF and bpf_task_pt_regs (5.15 and later).
_TASK_PT_REGS_PROBE = b"".join(
    struct.pack("<BBhi", code, regs, 0, imm)
    for code, regs, imm in (
        (0x85, 0x00, 158),  # call bpf_get_current_task_btf
        (0xBF, 0x01, 0),  # r1 = r0
        (0x85, 0x00, 175),  # call bpf_task_pt_regs
        (0xB7, 0x00, 0),  # r0 = 0
        (0x95, 0x00, 0),  # exit
    )
)


@dataclass(frozen=True)
class IoArgsChoice:
    at_exit: bool
    reason: str


def io_args_at_exit(mode: ProbeMode) -> IoArgsChoice:
    """Whether read/write exits read their arguments from the task's saved user registers, so
    that those calls need no entry hook (one hook and two map lookups fewer per call). Only
    with tracepoints: a kretprobe's registers are the kernel function's."""
    if mode is ProbeMode.SOCKET:
        return IoArgsChoice(True, "socket tracepoints: arguments read from the user registers")
    if mode is not ProbeMode.TRACEPOINT:
        return IoArgsChoice(False, "kprobes: arguments kept from the entry hooks")
    if platform.machine() != "x86_64":  # the registers' offsets in agent.c are x86-64's
        return IoArgsChoice(False, "not x86-64: arguments kept from the entry hooks")
    if os.environ.get(OTELBPF_IO_ARGS) == "entry":
        return IoArgsChoice(False, f"arguments kept from the entry hooks ({OTELBPF_IO_ARGS}=entry)")
    if not task_pt_regs_available():
        return IoArgsChoice(False, "no bpf_task_pt_regs (BTF, 5.15): arguments kept from entries")
    return IoArgsChoice(True, "arguments read from the user registers at the exit")


def task_pt_regs_available() -> bool:
    """Whether the kernel loads a tracepoint program that reads the task's user registers."""
    from otelbpf.probes import bpf_calls

    try:
        fd = bpf_calls.load_program(5, "otelbpf_regs", _TASK_PT_REGS_PROBE, "GPL", 0)
    except OSError:
        return False
    os.close(fd)
    return True
