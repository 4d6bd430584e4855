"""Fixtures for the end-to-end tests: root, bcc and a real kernel, real processes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.e2e.harness import AgentProcess, Background, free_port, python_server
from tests.otlp_receiver import OtlpReceiver


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests load eBPF programs: run them as root (./test.sh)")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


# Where a test runs in each: this kernel's default (socket tracepoints, no system call
# hooked), and the syscall tracepoints kernels before 6.5 get.
PROBE_MODES = ["socket", "tracepoint"]


def agent_env(
    receiver: OtlpReceiver, protocol: str = "grpc", probe_mode: str | None = None
) -> dict[str, str]:
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    if probe_mode is not None:
        env["OTELBPF_PROBE_MODE"] = probe_mode
    return env


@pytest.fixture
def server() -> Iterator[tuple[Background, int]]:
    port = free_port()
    running = python_server(port)
    yield running, port
    running.stop()


@pytest.fixture
def start_agent() -> Iterator:
    started: list[AgentProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> AgentProcess:
        agent = AgentProcess(args, env).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed: ./setup.sh --test installs it")
    return path
