"""Processes the end-to-end tests start: the agent, servers, clients; and free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.otlp_receiver import ReceivedMetricPoint

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


class AgentProcess:
    """`otelbpf run ARGS` as a real process; ready once it logs that tracing began."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self._dir = tempfile.TemporaryDirectory(prefix="otelbpf-agent-")
        self.stdout_path = Path(self._dir.name) / "stdout"
        self.stderr_path = Path(self._dir.name) / "stderr"
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.stop_seconds: float | None = None

    def start(self, timeout: float = 60.0) -> AgentProcess:
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "otelbpf.cli", "run", *self.args],
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "otelbpf INFO tracing " in self.stderr:
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"agent exited {self.process.returncode}:\n{self.stderr}")
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"agent did not start tracing:\n{self.stderr}")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        """Signal the agent and wait; returns its exit code (-9 when it had to be killed)."""
        if self.process is None or self.returncode is not None:
            return self.returncode if self.returncode is not None else -1
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.returncode = -9
        self.stop_seconds = time.monotonic() - started
        return self.returncode

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()


class Background:
    """A helper process the test owns: killed at the end whatever happens."""

    def __init__(self, argv: list[str], ready_line: str | None = None, **popen: object) -> None:
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, **popen
        )
        if ready_line is not None:
            line = self.process.stdout.readline()
            if not line.startswith(ready_line):
                self.stop()
                raise RuntimeError(f"{argv[0]} did not start: {line!r}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, line: str) -> str:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def python_server(port: int) -> Background:
    return Background([PYTHON, str(APPS / "http_server.py"), str(port)], ready_line="ready")


def python_client(*args: object, **popen: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, str(APPS / "http_client.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        **popen,
    )


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) for localhost and 127.0.0.1, made in directory by the openssl CLI."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key_path),
            "-out",
            str(cert_path),
        ],
        check=True,
        capture_output=True,
    )
    return cert_path, key_path


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{http}
    server {{
{server}
        root {dir}/www;
    }}
}}
"""


def summary_counts(agent: AgentProcess) -> dict[str, int]:
    """The counts of the agent's exit line, "stopped: N exchanges, M spans, K encrypted, ...",
    each under the rest of its part: "ring-buffer drops", "spans not delivered (export
    failed)"."""
    line = next((ln for ln in agent.stderr.splitlines() if " stopped: " in ln), None)
    assert line is not None, f"no summary line in the agent's log:\n{agent.stderr}"
    counts: dict[str, int] = {}
    for part in line.split(" stopped: ", 1)[1].split(", "):
        count, _, name = part.strip().partition(" ")
        counts[name] = int(count)
    return counts


def latest_histograms(
    points: list[ReceivedMetricPoint], name: str, pids: set[int]
) -> dict[frozenset, ReceivedMetricPoint]:
    """The newest cumulative point of each attribute set of one histogram, for these pids."""
    latest: dict[frozenset, ReceivedMetricPoint] = {}
    for point in points:
        if point.name != name or point.resource.get("process.pid") not in pids:
            continue
        key = frozenset(point.attributes.items())
        if key not in latest or point.time_ns >= latest[key].time_ns:
            latest[key] = point
    return latest


def histogram_counts(
    points: list[ReceivedMetricPoint], name: str, pids: set[int]
) -> dict[frozenset, int]:
    return {key: p.count for key, p in latest_histograms(points, name, pids).items()}


def server_requests_counted(points: list[ReceivedMetricPoint], pid: int) -> int:
    """The requests one process's http.server.request.duration histogram has counted."""
    return sum(histogram_counts(points, "http.server.request.duration", {pid}).values())


class NginxServer:
    """The distribution's nginx (a master and one forked worker) in its own directory.

    ``http`` and ``server`` are the test's own directives, inside the http and server blocks
    of a conf that keeps every path in that directory; ``www`` maps paths to file contents.
    """

    def __init__(
        self, directory: Path, ports: list[int], http: str, server: str, www: dict[str, bytes]
    ) -> None:
        self.dir = directory
        self.ports = ports
        for path, content in www.items():
            (directory / "www" / path).parent.mkdir(parents=True, exist_ok=True)
            (directory / "www" / path).write_bytes(content)
        self.conf = directory / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(dir=directory, http=http, server=server))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> NginxServer:
        nginx = shutil.which("nginx")
        if nginx is None:
            raise RuntimeError("nginx is not installed: ./setup.sh --test installs it")
        self.process = subprocess.Popen(
            [nginx, "-c", str(self.conf), "-p", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in self.ports:
            wait_for_port(port)
        return self

    @property
    def master_pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> set[int]:
        return {child.pid for child in psutil.Process(self.master_pid).children()}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
