"""The processes a scenario runs: the OTLP receiver, nginx, the agent, a Python web app.

Each is started by the bench and stopped by its own pid, whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import ROOT, bpf_map_kib, free_port, status_kib, stop_process, wait_for_port

PYTHON = sys.executable

AGENT_ENV = {
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "OTEL_BSP_MAX_QUEUE_SIZE": "65536",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2048",
    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
}


def require(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        hint = {"h2load": "nghttp2-client", "cc": "gcc"}.get(program, program)
        raise SystemExit(f"bench: {program} is not installed: apt-get install -y {hint}")
    return path


# --------------------------------------------------------------------------- receiver


class Receiver:
    """bench/receiver.py: tests.otlp_receiver.OtlpReceiver in a subprocess."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-m", "bench.receiver"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline().split()
        if not line or line[0] != "ready":
            self.stop()
            raise RuntimeError(f"the OTLP receiver did not start: {line!r}")
        self.grpc_port, self.http_port = int(line[1]), int(line[2])

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def _ask(self, command: str) -> str:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def count(self, path: str) -> int:
        return int(self._ask(f"count {path}"))

    def total(self) -> int:
        return int(self._ask("total"))

    def clear(self) -> None:
        self._ask("clear")

    def requests(self) -> dict[str, int]:
        return json.loads(self._ask("requests"))

    def settle(self, path: str, expected: int, quiet_s: float = 1.0, timeout: float = 15.0) -> int:
        """Wait until `expected` spans of path arrived, or none arrived for quiet_s seconds."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = self.count(path)
            if count >= expected:
                return count
            if count != last:
                last, last_change = count, time.monotonic()
            elif time.monotonic() - last_change >= quiet_s:
                return count
            time.sleep(0.1)
        return self.count(path)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        stop_process(self.process)


# --------------------------------------------------------------------------- nginx

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_timeout 60;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/www;
    }}
}}
"""

STATIC_BODY = b"hello from the otelbpf bench\n" * 4  # 116 bytes


class Nginx:
    """The distribution's nginx: 1 worker, keep-alive, small static files, no access log."""

    def __init__(self, directory: Path, paths: list[str]) -> None:
        self.dir = directory
        self.port = free_port()
        www = directory / "www"
        www.mkdir(parents=True, exist_ok=True)
        for path in paths:
            (www / path.lstrip("/")).write_bytes(STATIC_BODY)
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=directory, port=self.port))
        self.process = subprocess.Popen(
            [require("nginx"), "-c", str(conf), "-p", str(directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        stop_process(self.process, signal.SIGQUIT)  # graceful: the worker exits too


# --------------------------------------------------------------------------- Python app


class PythonApp:
    """bench/apps/flask_app.py in one of its modes: bare, or instrumented in-process."""

    def __init__(self, mode: str, endpoint: str | None, log_dir: Path) -> None:
        self.port = free_port()
        self.mode = mode
        env = {**os.environ, **AGENT_ENV, "OTEL_SERVICE_NAME": f"bench-flask-{mode}"}
        argv = [PYTHON, str(ROOT / "bench" / "apps" / "flask_app.py"), str(self.port), mode]
        if endpoint:
            argv.append(endpoint)
        self.stderr_path = log_dir / f"flask-{mode}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT
            )
        line = self.process.stdout.readline()
        if not line.startswith("ready"):
            self.stop()
            raise RuntimeError(
                f"the flask app ({mode}) did not start: {line!r}\n"
                + self.stderr_path.read_text(errors="replace")
            )
        wait_for_port(self.port)

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> int:
        """SIGTERM: the instrumented app flushes its spans before it exits."""
        return stop_process(self.process, signal.SIGTERM, timeout=20)


# --------------------------------------------------------------------------- the request loop


class RequestLoop:
    """bench/apps/request_loop.c, built with cc into the work folder once per bench run: one
    process that is client and server of a keep-alive connection, waiting on stdin to begin."""

    SOURCE = ROOT / "bench" / "apps" / "request_loop.c"

    def __init__(self, work: Path) -> None:
        self.binary = work / "request_loop"
        self.file = work / "request_loop.html"
        if not self.binary.exists():
            subprocess.run(
                [require("cc"), "-O2", "-o", str(self.binary), str(self.SOURCE)], check=True
            )
            self.file.write_bytes(STATIC_BODY)

    def start(self, requests: int, cpu: int | None = None) -> subprocess.Popen:
        """The loop, waiting for go(); pinned to one CPU, so no migration enters its figures."""
        loop = subprocess.Popen(
            [str(self.binary), str(requests), str(self.file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if cpu is not None:
            os.sched_setaffinity(loop.pid, {cpu})
        return loop

    @staticmethod
    def go(loop: subprocess.Popen, timeout: float = 600) -> dict[str, float]:
        """Let it run; its line (requests=N syscalls=S cpu_ns=C wall_ns=W) as numbers."""
        out, err = loop.communicate("go\n", timeout=timeout)
        if loop.returncode != 0:
            raise RuntimeError(f"request_loop exited {loop.returncode}: {err.strip()}")
        return {key: float(value) for key, value in (f.split("=") for f in out.split())}


# --------------------------------------------------------------------------- the agent


SUMMARY = re.compile(r"otelbpf INFO stopped: (?P<summary>.*)$", re.MULTILINE)
PROBE_MODE = re.compile(r"otelbpf INFO probe mode: (?P<mode>\S+)")
SELF_STARTUP = re.compile(r"otelbpf INFO tracing .*started in (?P<s>[0-9.]+)s")
COMPILED = re.compile(
    r"compiled \d+ BPF programs in (?P<s>[0-9.]+)s in a child process "
    r"\(its peak RSS: (?P<mib>\d+) MiB\)"
)


# `--agent-src DIR`: run the agent from another copy of the source (a `git archive` of a
# commit, say), through PYTHONPATH, which comes before the venv's editable install.
AGENT_SOURCE: Path | None = None


def agent_command() -> list[str]:
    script = Path(PYTHON).with_name("otelbpf")
    return [str(script)] if script.exists() else [PYTHON, "-m", "otelbpf.cli"]


def agent_env() -> dict[str, str]:
    env = {**os.environ, **AGENT_ENV}
    if AGENT_SOURCE is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(AGENT_SOURCE), env.get("PYTHONPATH", "")) if p
        )
    return env


@dataclass
class AgentRun:
    """`otelbpf run --pid PID --endpoint RECEIVER --protocol grpc` as a real process."""

    pid_to_trace: int
    endpoint: str
    log_dir: Path
    name: str
    extra_args: list[str] = field(default_factory=list)
    cache_dir: Path | None = None  # OTELBPF_CACHE_DIR: compiled programs of this run only
    process: subprocess.Popen | None = None
    launched_at: float = 0.0
    startup_s: float | None = None  # process start -> "otelbpf INFO tracing " on stderr
    stop_s: float | None = None  # SIGINT -> exit (final flush included)
    returncode: int | None = None
    rss_after_start_kib: int | None = None

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"agent-{self.name}.stderr"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 90.0) -> AgentRun:
        argv = [
            *agent_command(),
            "run",
            "--pid",
            str(self.pid_to_trace),
            "--endpoint",
            self.endpoint,
            "--protocol",
            "grpc",
            *self.extra_args,
        ]
        env = agent_env()
        if self.cache_dir is not None:
            env["OTELBPF_CACHE_DIR"] = str(self.cache_dir)
        with (
            open(self.log_dir / f"agent-{self.name}.stdout", "wb") as out,
            open(self.stderr_path, "wb") as err,
        ):
            self.launched_at = time.monotonic()
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=err, env=env, cwd=AGENT_SOURCE or ROOT
            )
        deadline = self.launched_at + timeout
        while time.monotonic() < deadline:
            if "otelbpf INFO tracing " in self.stderr:
                self.startup_s = time.monotonic() - self.launched_at
                self.rss_after_start_kib = status_kib(self.pid, "VmRSS")
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"the agent exited {self.process.returncode}:\n{self.stderr}")
            time.sleep(0.005)
        self.stop()
        raise TimeoutError(f"the agent did not start tracing in {timeout}s:\n{self.stderr}")

    def memory(self) -> dict[str, int | None]:
        return {
            "rss_kib": status_kib(self.pid, "VmRSS"),
            "hwm_kib": status_kib(self.pid, "VmHWM"),
            "bpf_maps_kib": bpf_map_kib(self.pid),
        }

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None:
            return -1
        started = time.monotonic()
        self.returncode = stop_process(self.process, signal.SIGINT, timeout)
        self.stop_s = time.monotonic() - started
        return self.returncode

    @property
    def self_reported_startup_s(self) -> float | None:
        match = SELF_STARTUP.search(self.stderr)
        return float(match["s"]) if match else None

    @property
    def compile(self) -> dict[str, float] | None:
        """The compile this start ran (None: its programs came from the cache)."""
        match = COMPILED.search(self.stderr)
        return {"compile_s": float(match["s"]), "peak_mib": int(match["mib"])} if match else None

    @property
    def probe_mode(self) -> str | None:
        match = PROBE_MODE.search(self.stderr)
        return match["mode"] if match else None

    def summary(self) -> dict[str, int]:
        """The exit line, "stopped: N exchanges, M spans, ..., K ring-buffer drops", parsed."""
        match = SUMMARY.search(self.stderr)
        if match is None:
            return {}
        counts: dict[str, int] = {}
        for part in match["summary"].split(", "):
            number, _, label = part.partition(" ")
            if number.isdigit():
                counts[label] = int(number)
        return counts
