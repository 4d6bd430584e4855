"""Where read and write exits get their arguments: the kernel is asked (a program calling
bpf_task_pt_regs is loaded), the environment can force the entry hooks, kprobes always use them."""

from __future__ import annotations

from otelbpf.config import OTELBPF_IO_ARGS
from otelbpf.probes.features import ProbeMode, io_args_at_exit


def test_this_kernel_has_the_registers_helper(monkeypatch):
    monkeypatch.delenv(OTELBPF_IO_ARGS, raising=False)
    choice = io_args_at_exit(ProbeMode.TRACEPOINT)
    assert choice.at_exit, choice.reason
    assert choice.reason == "arguments read from the user registers at the exit"


def test_the_environment_forces_entry_hooks(monkeypatch):
    monkeypatch.setenv(OTELBPF_IO_ARGS, "entry")
    choice = io_args_at_exit(ProbeMode.TRACEPOINT)
    assert not choice.at_exit
    assert OTELBPF_IO_ARGS in choice.reason


def test_kprobes_keep_entry_hooks(monkeypatch):
    monkeypatch.delenv(OTELBPF_IO_ARGS, raising=False)
    assert not io_args_at_exit(ProbeMode.KPROBE).at_exit
