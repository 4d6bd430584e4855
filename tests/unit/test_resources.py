"""Resource detection on real processes: who a traced process is, as resource attributes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from otelbpf.resources import ResourceDetector, parse_resource_attributes

HOST = socket.gethostname()
SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def program(tmp_path: Path) -> Path:
    """A real executable with a name of its own: a copy of sleep(1)."""
    path = tmp_path.resolve() / "checkout-svc"
    shutil.copy(SLEEP, path)
    path.chmod(0o755)
    return path


@pytest.fixture
def spawn() -> Iterator:
    children: list[subprocess.Popen] = []

    def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        # Popen returns once exec is under way: /proc/<pid>/exe is already the new one, but argv
        # and environ may not be published yet (see test_process_caught_inside_exec_...)
        child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()
        child.wait()


def missing_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process can have it


def test_process_with_service_name_and_attributes(program: Path, spawn) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "OTEL_SERVICE_NAME": "checkout",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    child = spawn([str(program), "600"], env)
    resource = ResourceDetector(environ={}).for_process(child.pid, "checkout-svc")
    assert dict(resource.attributes) == {
        "service.name": "checkout",
        "deployment.environment": "test",
        "process.pid": child.pid,
        "process.executable.name": "checkout-svc",
        "process.executable.path": str(program),
        "process.command": str(program),
        "host.name": HOST,
    }


def test_process_without_service_name_gets_its_executable_name(program: Path, spawn) -> None:
    child = spawn([str(program), "600", "--"], {"PATH": "/usr/bin:/bin"})
    resource = ResourceDetector(environ={}).for_process(child.pid, "ignored-comm")
    assert dict(resource.attributes) == {
        "service.name": "checkout-svc",
        "process.pid": child.pid,
        "process.executable.name": "checkout-svc",
        "process.executable.path": str(program),
        "process.command": str(program),
        "host.name": HOST,
    }


def test_arguments_only_when_asked_for(spawn) -> None:
    # arguments carry credentials as often as file names: curl -H 'Authorization: Bearer ...'
    argv = [sys.executable, "-c", "import time; time.sleep(600)", "--password=s3cret"]
    child = spawn(argv, {"PATH": "/usr/bin:/bin"})
    plain = dict(ResourceDetector(environ={}).for_process(child.pid).attributes)
    assert plain["process.command"] == sys.executable
    assert "process.command_line" not in plain
    assert not any("s3cret" in str(value) for value in plain.values())
    kept = ResourceDetector(environ={}, keep_command_line=True).for_process(child.pid)
    assert kept.attributes["process.command_line"] == " ".join(argv)
    assert kept.attributes["process.command"] == sys.executable


def test_service_name_from_the_process_resource_attributes(program: Path, spawn) -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=cart,service.version=1.2.3"}
    child = spawn([str(program), "600"], env)
    attributes = dict(ResourceDetector(environ={}).for_process(child.pid).attributes)
    assert attributes["service.name"] == "cart"
    assert attributes["service.version"] == "1.2.3"


def test_otel_service_name_beats_resource_attributes(program: Path, spawn) -> None:
    env = {"OTEL_SERVICE_NAME": "checkout", "OTEL_RESOURCE_ATTRIBUTES": "service.name=cart"}
    child = spawn([str(program), "600"], env)
    attributes = dict(ResourceDetector(environ={}).for_process(child.pid).attributes)
    assert attributes["service.name"] == "checkout"


def test_missing_process_falls_back_to_comm() -> None:
    pid = missing_pid()
    resource = ResourceDetector(environ={}).for_process(pid, "nginx")
    assert dict(resource.attributes) == {
        "service.name": "nginx",
        "process.pid": pid,
        "process.executable.name": "nginx",
        "host.name": HOST,
    }


def test_missing_process_without_comm_is_named_by_pid() -> None:
    pid = missing_pid()
    resource = ResourceDetector(environ={}).for_process(pid)
    assert dict(resource.attributes) == {
        "service.name": f"pid-{pid}",
        "process.pid": pid,
        "host.name": HOST,
    }


AGENT_ENV = {
    "OTEL_SERVICE_NAME": "otelbpf-agent",
    "OTEL_RESOURCE_ATTRIBUTES": (
        "deployment.environment=prod,k8s.cluster.name=eu-1,service.name=otelbpf-agent"
    ),
}


def test_agent_attributes_apply_to_every_process_but_not_its_service_name(
    program: Path, spawn
) -> None:
    detector = ResourceDetector(environ=AGENT_ENV)
    env = {
        "OTEL_SERVICE_NAME": "checkout",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    child = spawn([str(program), "600"], env)
    plain = spawn([str(program), "601"], {})

    assert dict(detector.for_process(child.pid).attributes) == {
        "service.name": "checkout",
        "deployment.environment": "test",  # the process's own value wins
        "k8s.cluster.name": "eu-1",
        "process.pid": child.pid,
        "process.executable.name": "checkout-svc",
        "process.executable.path": str(program),
        "process.command": str(program),
        "host.name": HOST,
    }
    assert dict(detector.for_process(plain.pid).attributes) == {
        "service.name": "checkout-svc",
        "deployment.environment": "prod",
        "k8s.cluster.name": "eu-1",
        "process.pid": plain.pid,
        "process.executable.name": "checkout-svc",
        "process.executable.path": str(program),
        "process.command": str(program),
        "host.name": HOST,
    }
    missing = missing_pid()
    assert dict(detector.for_process(missing, "redis-server").attributes) == {
        "service.name": "redis-server",
        "deployment.environment": "prod",
        "k8s.cluster.name": "eu-1",
        "process.pid": missing,
        "process.executable.name": "redis-server",
        "host.name": HOST,
    }


def test_process_caught_inside_exec_still_gets_its_argv_and_environment(program: Path) -> None:
    """Busy CPUs stretch the moment inside execve where exe is new but argv is still empty."""
    hogs = [
        subprocess.Popen(["sha1sum", "/dev/zero"], stdout=subprocess.DEVNULL)
        for _ in range((os.cpu_count() or 1) + 2)
    ]
    detector = ResourceDetector(environ={}, keep_command_line=True)
    env = {"OTEL_SERVICE_NAME": "checkout"}
    incomplete = 0
    try:
        for n in range(100):
            child = subprocess.Popen([str(program), "600", str(n)], env=env)
            attributes = dict(detector.for_process(child.pid).attributes)
            child.kill()
            child.wait()
            expected = (f"{program} 600 {n}", "checkout")
            got = (attributes.get("process.command_line"), attributes["service.name"])
            incomplete += got != expected
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert incomplete == 0


def test_agent_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=obs")
    attributes = dict(ResourceDetector().for_process(missing_pid(), "x").attributes)
    assert attributes["team"] == "obs"


def test_agent_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-agent")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    assert dict(ResourceDetector().for_agent().attributes) == {
        "service.name": "edge-agent",
        "deployment.environment": "prod",
        "host.name": HOST,
        "process.pid": os.getpid(),
    }
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    assert dict(ResourceDetector().for_agent().attributes)["service.name"] == "otelbpf"


def test_agent_service_name_from_its_resource_attributes() -> None:
    detector = ResourceDetector(environ={"OTEL_RESOURCE_ATTRIBUTES": "service.name=edge-agent"})
    assert dict(detector.for_agent().attributes)["service.name"] == "edge-agent"


def test_agent_service_name_from_the_given_environ() -> None:
    detector = ResourceDetector(environ={"OTEL_SERVICE_NAME": "edge-agent"})
    assert dict(detector.for_agent().attributes)["service.name"] == "edge-agent"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {}),
        ("", {}),
        ("a=1,b=2", {"a": "1", "b": "2"}),
        (" a = 1 , b=two words ", {"a": "1", "b": "two words"}),
        ("k=hello%20world,c=%2C%3D%25", {"k": "hello world", "c": ",=%"}),
        ("plus=a+b", {"plus": "a+b"}),  # percent-decoding, not form decoding
        ("eq=a=b", {"eq": "a=b"}),
        ("empty=", {"empty": ""}),
        ("novalue,=nokey,ok=1,,", {"ok": "1"}),
        ("utf8=caf%C3%A9", {"utf8": "café"}),
        ("dup=1,dup=2", {"dup": "2"}),
    ],
)
def test_parse_resource_attributes(text: str | None, expected: dict[str, str]) -> None:
    assert parse_resource_attributes(text) == expected


def test_host_name_from_resource_attributes_wins(program: Path, spawn) -> None:
    """In a container the kernel's host name is the pod's: a user who names the node in
    OTEL_RESOURCE_ATTRIBUTES gets that one, for every process and for the agent."""
    detector = ResourceDetector(environ={"OTEL_RESOURCE_ATTRIBUTES": "host.name=node-7,team=obs"})
    child = spawn([str(program), "600"], {})
    assert dict(detector.for_process(child.pid).attributes) == {
        "service.name": "checkout-svc",
        "team": "obs",
        "process.pid": child.pid,
        "process.executable.name": "checkout-svc",
        "process.executable.path": str(program),
        "process.command": str(program),
        "host.name": "node-7",
    }
    missing = missing_pid()
    assert dict(detector.for_process(missing, "redis-server").attributes) == {
        "service.name": "redis-server",
        "team": "obs",
        "process.pid": missing,
        "process.executable.name": "redis-server",
        "host.name": "node-7",
    }
    assert dict(detector.for_agent().attributes) == {
        "service.name": "otelbpf",
        "team": "obs",
        "host.name": "node-7",
        "process.pid": os.getpid(),
    }
