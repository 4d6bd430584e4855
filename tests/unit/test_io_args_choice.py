"""Where read and write exits get their arguments: the kernel is asked (a program calling
bpf_task_pt_regs is loaded), the environment can force the entry hooks, kprobes always use them."""

from __future__ import annotations

from otelbpf.probes.features import IO_ARGS_ENV, ProbeMode, io_args_at_exit


def test_this_kernel_has_the_registers_helper(monkeypatch):
    monkeypatch.delenv(IO_ARGS_ENV, raising=False)
    choice = io_args_at_exit(ProbeMode.TRACEPOINT)
    assert choice.at_exit, choice.reason
    assert choice.reason == "arguments read from the user registers at the exit"


def test_the_environment_forces_entry_hooks(monkeypatch):
    monkeypatch.setenv(IO_ARGS_ENV, "entry")
    choice = io_args_at_exit(ProbeMode.TRACEPOINT)
    assert not choice.at_exit
    assert IO_ARGS_ENV in choice.reason


def test_kprobes_keep_entry_hooks(monkeypatch):
    monkeypatch.delenv(IO_ARGS_ENV, raising=False)
    assert not io_args_at_exit(ProbeMode.KPROBE).at_exit
