"""End to end: what a user sees when the agent cannot run, and the kprobe path."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from otelbpf.probes.features import kprobes_available, socket_tracepoints_missing
from otelbpf.probes.loader import (
    FLUSH_PROGRAM,
    LIFECYCLE_TRACEPOINTS,
    LOADER_PROGRAM,
    SOCKET_TRACEPOINT_PROGRAMS,
    SYSCALL_PROGRAMS,
)
from tests.e2e.conftest import agent_env
from tests.e2e.harness import PYTHON, ROOT, AgentProcess, python_client


def run_agent(*args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None):
    return subprocess.run(
        [*(prefix or []), PYTHON, "-m", "otelbpf.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def assert_clear_failure(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "how to fix:" in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr


def test_missing_pid():
    result = run_agent("run", "--pid", "4194304")
    assert_clear_failure(result, "--pid 4194304: no such process")


def test_root_without_capabilities():
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is part of every Debian system"
    result = run_agent("run", prefix=[setpriv, "--inh-caps=-all", "--bounding-set=-all", "--"])
    assert_clear_failure(result, "running as root without capabilities", "CAP_SYS_ADMIN")


def test_headers_that_do_not_exist():
    import os

    env = {**os.environ, "BCC_KERNEL_SOURCE": "/nonexistent/headers"}
    result = run_agent("run", env=env)
    assert_clear_failure(result, "BCC_KERNEL_SOURCE=/nonexistent/headers has no include/ folder")


def test_kprobe_mode_forced_on_a_kernel_without_kprobes():
    if kprobes_available():
        pytest.skip("this kernel has kprobes: the refusal path cannot be shown here")
    result = run_agent("run", "--probe-mode", "kprobe")
    assert_clear_failure(result, "this kernel has no kprobes", "--probe-mode tracepoint")


def test_check_reports_the_probe_mode_and_verifies_what_run_will_load(tmp_path):
    """`check` compiles the programs `run` would load with its defaults, puts every one
    through the verifier, and leaves them cached: the next `run` starts without a compile."""
    env = {**os.environ, "OTELBPF_CACHE_DIR": str(tmp_path)}
    result = run_agent("check", env=env)
    assert result.returncode == 0, result.stderr
    if socket_tracepoints_missing() is None:
        expected = "socket"
    else:
        expected = "kprobe" if kprobes_available() else "tracepoint"
    assert f"probe mode: {expected}" in result.stdout
    source = (ROOT / "bpf" / "agent.c").read_text()
    uprobes = set(re.findall(r"^int (uprobe_\w+|uretprobe_\w+)\(", source, re.MULTILINE))
    if expected == "socket":  # no system call hooked; the loader's uprobe tells of dlopen
        programs = set(SOCKET_TRACEPOINT_PROGRAMS.values()) | uprobes
    else:
        prefix = ("tp_enter_", "tp_exit_") if expected == "tracepoint" else ("syscall__", "kret_")
        # reads and writes need no entry program where their exit reads the registers
        at_exit = "arguments read from the user registers" in result.stdout
        assert at_exit == (expected == "tracepoint")  # this kernel has bpf_task_pt_regs
        programs = {
            f"{prefix[0]}{entry}"
            for entry, exit_ in SYSCALL_PROGRAMS.values()
            if not (at_exit and exit_ == "io")
        }
        programs |= {f"{prefix[1]}{exit_}" for _, exit_ in SYSCALL_PROGRAMS.values() if exit_}
        programs |= uprobes - {LOADER_PROGRAM}
    programs |= set(LIFECYCLE_TRACEPOINTS.values())
    programs.add(FLUSH_PROGRAM)  # run on request, never attached
    assert f"BPF programs: {len(programs)} pass the kernel's verifier (compiled in" in (
        result.stdout
    )
    assert "client address of an accept(fd, NULL, NULL): from the kernel's socket" in (
        result.stdout
    )
    again = run_agent("check", env=env)
    assert again.returncode == 0, again.stderr
    assert "pass the kernel's verifier (from the cache;" in again.stdout

    with AgentProcess(["--pid", str(os.getpid())], {"OTELBPF_CACHE_DIR": str(tmp_path)}) as agent:
        log = agent.stderr
    assert "BPF programs from the cache" in log
    assert "compiled" not in log


@pytest.mark.skipif(
    not kprobes_available(),
    reason="this kernel has no kprobes (CONFIG_KPROBES is off): the kprobe programs are loaded "
    "through the verifier by tests/unit/test_abi.py, but cannot be attached here",
)
def test_kprobe_mode_traces_requests(receiver, server, start_agent):
    proc, port = server
    start_agent(["--pid", str(proc.pid), "--probe-mode", "kprobe"], agent_env(receiver))
    python_client("keepalive", "127.0.0.1", port, "/users/1", 3)
    spans = receiver.wait_for_spans(3, timeout=15)
    assert [s.name for s in spans] == ["GET /users/{id}"] * 3
