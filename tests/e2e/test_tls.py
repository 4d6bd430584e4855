"""End to end, issue "Decrypted HTTPS": TLS libraries hooked with uprobes give the same spans
as plain HTTP, with url.scheme "https" and url.full "https://...". Real servers and clients on
every stack the agent hooks (OpenSSL shared by Python, nginx and curl; OpenSSL linked into
node; Go's crypto/tls; GnuTLS), and TLS no hook decrypts (tlslite-ng, --no-tls) counted as
encrypted, never turned into spans.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from otelbpf.tlswatch import SYSTEM_LIBRARY_DIRS
from tests.e2e.conftest import PROBE_MODES, agent_env, require
from tests.e2e.harness import (
    APPS,
    PYTHON,
    AgentProcess,
    Background,
    NginxServer,
    curl,
    free_port,
    python_client,
    self_signed_cert,
    summary_counts,
)
from tests.e2e.test_http_nginx import WWW as NGINX_WWW
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

MS = 1_000_000
PYTHON_EXE = os.path.basename(os.path.realpath(PYTHON))
SETTLE_S = 2.0  # how long "nothing more arrives" is watched for


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, made with the openssl CLI."""
    require("openssl")
    return self_signed_cert(tmp_path_factory.mktemp("cert"))


def python_tls_server(port: int, cert: tuple[Path, Path]) -> Background:
    return Background(
        [PYTHON, str(APPS / "http_server.py"), str(port), "--tls", *map(str, cert)],
        ready_line="ready",
    )


@pytest.fixture
def tls_server(cert: tuple[Path, Path]) -> Iterator[tuple[Background, int]]:
    port = free_port()
    running = python_tls_server(port, cert)
    yield running, port
    running.stop()


@pytest.fixture
def owned() -> Iterator[Callable[[Background], Background]]:
    """Background processes started inside a test, stopped at its end whatever happens."""
    started: list[Background] = []

    def own(process: Background) -> Background:
        started.append(process)
        return process

    yield own
    for process in started:
        process.stop()


def of_kind(spans: list[ReceivedSpan], kind: str, pid: int | None = None) -> list[ReceivedSpan]:
    return sorted(
        (
            s
            for s in spans
            if s.kind == kind and (pid is None or s.resource.get("process.pid") == pid)
        ),
        key=lambda s: s.start_ns,
    )


def wait_kinds(
    receiver: OtlpReceiver, servers: int, clients: int, timeout: float = 20
) -> list[ReceivedSpan]:
    """Wait for at least that many server and client spans, then watch that no more come."""
    receiver.wait_for_spans(
        lambda s: len(of_kind(s, "SERVER")) >= servers and len(of_kind(s, "CLIENT")) >= clients,
        timeout,
    )
    receiver.wait_for_spans(lambda s: False, timeout=1.0)
    return receiver.spans()


def wait_for_log(
    receiver: OtlpReceiver, agent: AgentProcess, pattern: str, timeout: float = 20
) -> re.Match[str] | None:
    """The agent's log line matching pattern (polled through the receiver's wait), or None."""
    regex = re.compile(pattern, re.MULTILINE)
    receiver.wait_for_spans(lambda _s: regex.search(agent.stderr) is not None, timeout)
    return regex.search(agent.stderr)


def describe(agent: AgentProcess, spans: list[ReceivedSpan]) -> str:
    """For failure messages: what arrived, and what the agent logged."""
    lines = [
        f"{s.kind} {s.name} {s.attributes.get('url.full') or s.attributes.get('url.path')} "
        f"{s.attributes.get('http.response.status_code')} pid={s.resource.get('process.pid')} "
        f"service={s.resource.get('service.name')}"
        for s in sorted(spans, key=lambda s: s.start_ns)
    ]
    return "spans:\n" + "\n".join(lines) + "\nagent log:\n" + agent.stderr


def maps_of(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def assert_server_span(span: ReceivedSpan, port: int, method: str, path: str, status: int) -> None:
    attrs = span.attributes
    assert attrs["http.request.method"] == method
    assert attrs["url.path"] == path
    assert attrs["url.scheme"] == "https"
    assert attrs["http.response.status_code"] == status
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == port
    assert attrs.get("client.address") == "127.0.0.1"
    assert isinstance(attrs.get("client.port"), int)
    assert attrs["network.protocol.version"] == "1.1"
    assert span.status_code == ("ERROR" if status >= 500 else "UNSET")
    assert span.end_ns >= span.start_ns


def assert_client_span(span: ReceivedSpan, url: str, method: str, status: int) -> None:
    attrs = span.attributes
    assert attrs["url.full"] == url
    assert attrs["http.request.method"] == method
    assert attrs["http.response.status_code"] == status
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["network.protocol.version"] == "1.1"
    assert span.status_code == ("ERROR" if status >= 400 else "UNSET")
    assert span.end_ns >= span.start_ns


def curl_k(*args: str) -> str:
    return curl("-k", *args).stdout


# ---------------------------------------------------------------- Python ssl (shared OpenSSL)


def test_python_https_server_and_client_spans(receiver, tls_server, start_agent):
    server, port = tls_server
    # --port: the server (listening before the agent) and every client of the port
    agent = start_agent(["--port", str(port)], agent_env(receiver))

    python_client("keepalive", "127.0.0.1", port, "/users/7?token=secret", 5, "--tls")

    spans = wait_kinds(receiver, 5, 5)
    servers, clients = of_kind(spans, "SERVER"), of_kind(spans, "CLIENT")
    assert len(servers) == 5 and len(clients) == 5, describe(agent, spans)
    for span in servers:
        assert span.name == "GET /users/{id}"
        assert_server_span(span, port, "GET", "/users/7", 200)
        assert span.attributes["url.query"] == "token=REDACTED"
        assert span.attributes["http.route"] == "/users/{id}"
        assert span.attributes["http.response.body.size"] == len("hello")
        assert span.attributes["http.request.body.size"] == 0
        assert span.resource["service.name"] == PYTHON_EXE
        assert span.resource["process.pid"] == server.pid
    # keep-alive: one connection carried the five requests
    assert len({s.attributes["client.port"] for s in servers}) == 1
    for span in clients:
        assert span.name == "GET /users/{id}"
        assert_client_span(span, f"https://127.0.0.1:{port}/users/7?token=REDACTED", "GET", 200)
        assert span.attributes["server.port"] == port
        assert span.resource["service.name"] == PYTHON_EXE
    client_pids = {s.resource["process.pid"] for s in clients}
    assert len(client_pids) == 1 and server.pid not in client_pids


def test_python_https_statuses_and_handler_duration(receiver, tls_server, start_agent):
    server, port = tls_server
    agent = start_agent(["--port", str(port)], agent_env(receiver))

    python_client("keepalive", "127.0.0.1", port, "/slow", 2, "--tls")
    python_client("keepalive", "127.0.0.1", port, "/status/404", 1, "--tls")
    python_client("keepalive", "127.0.0.1", port, "/status/500", 1, "--tls")

    spans = wait_kinds(receiver, 4, 4)
    servers, clients = of_kind(spans, "SERVER"), of_kind(spans, "CLIENT")
    assert len(servers) == 4 and len(clients) == 4, describe(agent, spans)
    assert [s.attributes["url.path"] for s in servers] == [
        "/slow",
        "/slow",
        "/status/404",
        "/status/500",
    ]
    for span, status in zip(servers, [200, 200, 404, 500], strict=True):
        assert_server_span(span, port, "GET", span.attributes["url.path"], status)
        assert span.resource["process.pid"] == server.pid
    assert servers[3].attributes["error.type"] == "500"
    assert "error.type" not in servers[2].attributes
    base = f"https://127.0.0.1:{port}"
    for span, path, status in zip(
        clients,
        ["/slow", "/slow", "/status/404", "/status/500"],
        [200, 200, 404, 500],
        strict=True,
    ):
        assert_client_span(span, base + path, "GET", status)
    assert clients[2].attributes["error.type"] == "404"
    # the handler sleeps 20 ms: neither end can see the exchange shorter than that
    for span in servers[:2] + clients[:2]:
        assert span.duration_ns >= 20 * MS


def test_python_client_that_loads_libssl_after_the_agent_started(
    receiver, tls_server, start_agent, owned
):
    _server, port = tls_server
    client = owned(
        Background(
            [PYTHON, str(APPS / "tls_late_client.py"), "127.0.0.1", str(port), "/users/3", "3"],
            ready_line="waiting",
        )
    )
    assert "libssl" not in maps_of(client.pid)  # nothing to hook when the agent starts
    agent = start_agent(["--pid", str(client.pid)], agent_env(receiver))

    assert client.send("import") == "imported"
    assert "libssl" in maps_of(client.pid)
    # the agent hooks the library (at start-up, or when the kernel reports the new code
    # mapping); the requests wait for that, since hooking cannot be instantaneous
    hooked = wait_for_log(receiver, agent, r"TLS: hooked \S*libssl\.so")
    assert hooked is not None, f"libssl was never hooked:\n{agent.stderr}"
    assert client.send("go") == "done 200 200 200"

    spans = wait_kinds(receiver, 0, 3)
    clients = of_kind(spans, "CLIENT", client.pid)
    assert len(clients) == 3, describe(agent, spans)
    assert len(spans) == 3  # the server is not traced
    for span in clients:
        assert span.name == "GET /users/{id}"
        assert_client_span(span, f"https://127.0.0.1:{port}/users/3", "GET", 200)
        assert span.attributes["server.port"] == port
        assert span.resource["service.name"] == PYTHON_EXE


# Loads a library by its path when told, as a program's plugin or a wheel's bundled libssl does.
_LATE_LOADER = """
import ctypes, sys
print("waiting", flush=True)
for line in sys.stdin:
    ctypes.CDLL(line.strip())
    print("loaded", flush=True)
"""


@pytest.mark.parametrize("probe_mode", PROBE_MODES)
def test_a_tls_library_loaded_later_from_outside_the_system_folders_is_hooked(
    receiver, start_agent, owned, tmp_path, probe_mode
):
    """A libssl the agent cannot have hooked at start-up (not in a system folder, not mapped
    yet), loaded with dlopen() while tracing: the kernel tells of the new code, through the
    mmap() hook (syscall tracepoints) or the dynamic loader's (socket tracepoints, where no
    system call is hooked), and the agent hooks the file for that process."""
    system_libssl = next(
        (p for d in SYSTEM_LIBRARY_DIRS for p in sorted(Path(d).glob("libssl.so.*"))), None
    )
    assert system_libssl is not None, "libssl3 is a dependency of python3 on Debian"
    private = tmp_path / "bundled" / "libssl.so.3"
    private.parent.mkdir()
    shutil.copy(system_libssl, private)
    process = owned(Background([PYTHON, "-c", _LATE_LOADER], ready_line="waiting"))
    agent = start_agent(["--pid", str(process.pid)], agent_env(receiver, probe_mode=probe_mode))
    assert str(private) not in agent.stderr

    assert process.send(str(private)) == "loaded"
    pattern = rf"TLS: hooked /proc/{process.pid}/root{re.escape(str(private))} \(openssl\) "
    pattern += rf"with 8 uprobes for pid {process.pid}$"
    hooked = wait_for_log(receiver, agent, pattern)
    assert hooked is not None, f"the late library was never hooked:\n{agent.stderr}"


# ---------------------------------------------------------------- nginx and curl (OpenSSL)


class TlsNginx(NginxServer):
    """The plaintext tests' nginx and files, listening with ssl on the certificate fixture."""

    def __init__(self, directory: Path, cert: tuple[Path, Path]) -> None:
        self.port = free_port()
        super().__init__(
            directory,
            [self.port],
            http="    keepalive_timeout 30;",
            server=f"""\
        listen 127.0.0.1:{self.port} ssl;
        ssl_certificate {cert[0]};
        ssl_certificate_key {cert[1]};
        location = /fail {{ return 500; }}
        location = /created {{ return 201 "made"; }}""",
            www=NGINX_WWW,
        )


@pytest.fixture
def tls_nginx(tmp_path: Path, cert: tuple[Path, Path]) -> Iterator[TlsNginx]:
    server = TlsNginx(tmp_path, cert)
    yield server
    server.stop()


def test_nginx_https_server_and_curl_client_spans(receiver, tls_nginx, start_agent):
    tls_nginx.start()
    require("curl")
    agent = start_agent(["--pid", str(tls_nginx.master_pid), "--exe", "curl"], agent_env(receiver))
    base = f"https://127.0.0.1:{tls_nginx.port}"

    assert curl_k(f"{base}/index.html") == "200"
    assert curl_k(f"{base}/items/1234") == "200"
    assert curl_k(f"{base}/missing") == "404"
    assert curl_k(f"{base}/fail") == "500"
    assert curl_k("-X", "POST", "--data-binary", "abc", f"{base}/created") == "201"

    def ours(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        # --exe curl traces every curl on the host: keep the calls made to this nginx
        return [
            s
            for s in spans
            if s.kind == "SERVER" or str(s.attributes.get("url.full", "")).startswith(base + "/")
        ]

    receiver.wait_for_spans(
        lambda s: len(of_kind(ours(s), "SERVER")) >= 5 and len(of_kind(ours(s), "CLIENT")) >= 5,
        timeout=20,
    )
    receiver.wait_for_spans(lambda s: False, timeout=1.0)
    spans = ours(receiver.spans())
    servers, clients = of_kind(spans, "SERVER"), of_kind(spans, "CLIENT")
    assert len(servers) == 5 and len(clients) == 5, describe(agent, receiver.spans())

    assert {s.resource["process.pid"] for s in servers} <= set(tls_nginx.worker_pids())
    assert {s.resource["service.name"] for s in servers} == {"nginx"}
    assert [s.name for s in servers] == [
        "GET /index.html",
        "GET /items/{id}",
        "GET /missing",
        "GET /fail",
        "POST /created",
    ]
    statuses = [200, 200, 404, 500, 201]
    paths = ["/index.html", "/items/1234", "/missing", "/fail", "/created"]
    methods = ["GET", "GET", "GET", "GET", "POST"]
    for span, method, path, status in zip(servers, methods, paths, statuses, strict=True):
        assert_server_span(span, tls_nginx.port, method, path, status)
        assert span.attributes["user_agent.original"].startswith("curl/")
    assert servers[0].attributes["http.response.body.size"] == len("hello from nginx\n")
    assert servers[4].attributes["http.request.body.size"] == 3

    assert {s.resource["service.name"] for s in clients} == {"curl"}
    for span, method, path, status in zip(clients, methods, paths, statuses, strict=True):
        assert_client_span(span, base + path, method, status)
        assert span.attributes["server.port"] == tls_nginx.port
    # each client span encloses its server span: the same exchange seen from both ends
    for client, server in zip(clients, servers, strict=True):
        assert client.start_ns <= server.start_ns <= server.end_ns <= client.end_ns, (
            f"{client.name}: client {client.start_ns}..{client.end_ns}, "
            f"server {server.start_ns}..{server.end_ns}\n" + describe(agent, spans)
        )


# ---------------------------------------------------------------- Node.js (OpenSSL linked in)


def test_node_https_server_spans(receiver, cert, start_agent, owned):
    node = require("node")

    port = free_port()
    server = owned(
        Background(
            [node, str(APPS / "https_server.js"), str(port), *map(str, cert)], ready_line="ready"
        )
    )
    agent = start_agent(["--pid", str(server.pid)], agent_env(receiver))
    base = f"https://127.0.0.1:{port}"

    python_client("keepalive", "127.0.0.1", port, "/users/9", 4, "--tls")
    python_client("keepalive", "127.0.0.1", port, "/slow", 2, "--tls")
    assert curl_k("--http1.1", f"{base}/status/404") == "404"
    assert curl_k("--http1.1", f"{base}/status/500") == "500"
    assert curl_k("--http1.1", "-X", "POST", "--data-binary", "x" * 100, f"{base}/echo") == "201"

    spans = wait_kinds(receiver, 9, 0)
    servers = of_kind(spans, "SERVER", server.pid)
    assert len(servers) == 9, describe(agent, spans)
    assert len(spans) == 9  # only node is traced
    assert {s.resource["service.name"] for s in servers} == {"node"}
    assert {s.resource["process.executable.name"] for s in servers} == {"node"}
    expected = [("GET", "/users/9", 200)] * 4 + [("GET", "/slow", 200)] * 2
    expected += [("GET", "/status/404", 404), ("GET", "/status/500", 500), ("POST", "/echo", 201)]
    for span, (method, path, status) in zip(servers, expected, strict=True):
        assert_server_span(span, port, method, path, status)
    assert [s.name for s in servers] == ["GET /users/{id}"] * 4 + ["GET /slow"] * 2 + [
        "GET /status/{id}",
        "GET /status/{id}",
        "POST /echo",
    ]
    assert len({s.attributes["client.port"] for s in servers[:4]}) == 1  # keep-alive
    assert servers[8].attributes["http.request.body.size"] == 100
    assert servers[8].attributes["http.response.body.size"] == len("100")
    for span in servers[4:6]:  # setTimeout(20 ms) before the answer
        assert span.duration_ns >= 20 * MS


# ---------------------------------------------------------------- Go crypto/tls

GO_BINARY = "gohttps"  # the service name its spans must carry


def build_go_server(directory: Path) -> Path:
    """BUILD STEP: the Go server, from the distribution's toolchain and standard library only.

    No module download can happen (GO111MODULE=off, GOPROXY=off, GOFLAGS empty); caches live in
    the test's directory. A failed build fails the test: it is not a reason to skip.
    """
    go = require("go")
    binary = directory / GO_BINARY
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPROXY": "off",
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
        "GOCACHE": str(directory / "gocache"),
        "GOPATH": str(directory / "gopath"),
        "HOME": str(directory),
    }
    result = subprocess.run(
        [go, "build", "-o", str(binary), str(APPS / "go_https" / "main.go")],
        capture_output=True,
        text=True,
        env=env,
        cwd=directory,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"go build failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return binary


def test_go_https_server_spans(receiver, cert, start_agent, owned, tmp_path):
    binary = build_go_server(tmp_path)  # BUILD STEP: fails the test if go build fails

    port = free_port()
    server = owned(
        Background([str(binary), str(port), *map(str, cert)], ready_line="ready", cwd=tmp_path)
    )
    agent = start_agent(["--pid", str(server.pid)], agent_env(receiver))
    base = f"https://127.0.0.1:{port}"

    python_client("keepalive", "127.0.0.1", port, "/users/5", 3, "--tls")
    python_client("keepalive", "127.0.0.1", port, "/slow", 2, "--tls")
    assert curl_k("--http1.1", f"{base}/status/404") == "404"
    assert curl_k("--http1.1", f"{base}/status/500") == "500"
    assert curl_k("--http1.1", "-X", "POST", "--data-binary", "y" * 42, f"{base}/echo") == "201"

    spans = wait_kinds(receiver, 8, 0)
    servers = of_kind(spans, "SERVER", server.pid)
    assert len(servers) == 8, describe(agent, spans)
    assert len(spans) == 8  # only the Go server is traced
    assert {s.resource["service.name"] for s in servers} == {GO_BINARY}
    expected = [("GET", "/users/5", 200)] * 3 + [("GET", "/slow", 200)] * 2
    expected += [("GET", "/status/404", 404), ("GET", "/status/500", 500), ("POST", "/echo", 201)]
    for span, (method, path, status) in zip(servers, expected, strict=True):
        assert_server_span(span, port, method, path, status)
    assert [s.name for s in servers] == ["GET /users/{id}"] * 3 + ["GET /slow"] * 2 + [
        "GET /status/{id}",
        "GET /status/{id}",
        "POST /echo",
    ]
    assert len({s.attributes["client.port"] for s in servers[:3]}) == 1  # keep-alive
    assert servers[7].attributes["http.request.body.size"] == 42
    assert servers[7].attributes["http.response.body.size"] == len("42")
    for span in servers[3:5]:  # the handler sleeps 20 ms
        assert span.duration_ns >= 20 * MS


# ---------------------------------------------------------------- GnuTLS (gnutls-cli)


def gnutls_cli_on_cue(port: int) -> subprocess.Popen[str]:
    """A shell that waits for a line on stdin, then becomes gnutls-cli (exec: the same pid).

    Selected with --pid before it runs gnutls-cli, so the agent traces it from the start, and
    libgnutls is mapped only after the agent started."""
    return subprocess.Popen(
        [
            "sh",
            "-c",
            'read cue && exec "$0" --insecure --port "$1" 127.0.0.1',
            require("gnutls-cli"),
            str(port),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def gnutls_request(cli: subprocess.Popen[str], port: int, path: str) -> str:
    """Send one request (stdin stays open: at EOF gnutls-cli would hang up before the
    response) and return everything gnutls-cli printed until the server closed."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    cli.stdin.write(request)
    cli.stdin.flush()
    output = cli.stdout.read()
    cli.wait(30)
    cli.stdin.close()
    return output


@pytest.fixture
def gnutls_clis(tls_server) -> Iterator[tuple[subprocess.Popen[str], subprocess.Popen[str]]]:
    _server, port = tls_server
    clis = (gnutls_cli_on_cue(port), gnutls_cli_on_cue(port))
    yield clis
    for cli in clis:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


def test_gnutls_cli_client_spans(receiver, tls_server, gnutls_clis, start_agent):
    _server, port = tls_server
    first, second = gnutls_clis
    for cli in gnutls_clis:
        assert "libgnutls" not in maps_of(cli.pid)
    agent = start_agent(["--pid", str(first.pid), "--pid", str(second.pid)], agent_env(receiver))

    # the first becomes gnutls-cli, handshakes, and waits until the agent has hooked
    # libgnutls (hooking cannot be instantaneous) before it sends its request
    first.stdin.write("go\n")
    first.stdin.flush()
    for line in first.stdout:
        if line.startswith("- Simple Client Mode"):
            break
    assert "libgnutls" in maps_of(first.pid)
    hooked = wait_for_log(receiver, agent, r"TLS: hooked \S*libgnutls\.so")
    assert hooked is not None, f"libgnutls was never hooked:\n{agent.stderr}"
    output = gnutls_request(first, port, "/users/5")
    assert "HTTP/1.1 200" in output
    # the second finds the library hooked already: its request is there as soon as it runs
    second.stdin.write("go\n")
    output = gnutls_request(second, port, "/status/404")
    assert "HTTP/1.1 404" in output

    spans = wait_kinds(receiver, 0, 2)
    clients = of_kind(spans, "CLIENT")
    assert len(clients) == 2, describe(agent, spans)
    assert len(spans) == 2  # the server is not traced
    assert [s.resource["process.pid"] for s in clients] == [first.pid, second.pid]
    assert {s.resource["service.name"] for s in clients} == {"gnutls-cli"}
    assert {s.resource["process.executable.name"] for s in clients} == {"gnutls-cli"}
    ok, missing = clients
    assert ok.name == "GET /users/{id}"
    assert_client_span(ok, f"https://127.0.0.1:{port}/users/5", "GET", 200)
    assert missing.name == "GET /status/{id}"
    assert_client_span(missing, f"https://127.0.0.1:{port}/status/404", "GET", 404)
    assert missing.attributes["error.type"] == "404"
    for span in clients:
        assert span.attributes["server.port"] == port


# ---------------------------------------------------------------- TLS no hook decrypts


def test_tls_through_an_unhooked_library_is_counted_encrypted(
    receiver, tls_server, start_agent, owned
):
    _server, port = tls_server
    # tlslite-ng implements TLS in Python: no TLS library function carries the plaintext
    client = owned(
        Background(
            [PYTHON, str(APPS / "tlslite_client.py"), "127.0.0.1", str(port), "/users/1", "3"],
            ready_line="waiting",
        )
    )
    agent = start_agent(["--pid", str(client.pid)], agent_env(receiver))

    assert client.send("go") == "done 200 200 200"

    receiver.wait_for_spans(lambda s: False, timeout=SETTLE_S)
    assert receiver.spans() == []
    assert agent.stop() == 0
    assert "Traceback" not in agent.stderr
    counts = summary_counts(agent)
    assert counts["spans"] == 0
    assert counts.get("encrypted", 0) >= 1, agent.stderr
    assert re.search(r"(\d+) encrypted", agent.stderr) is not None


def test_no_tls_option_leaves_https_encrypted(receiver, tls_server, start_agent):
    server, port = tls_server
    agent = start_agent(["--pid", str(server.pid), "--no-tls"], agent_env(receiver))

    python_client("keepalive", "127.0.0.1", port, "/users/2", 3, "--tls")

    receiver.wait_for_spans(lambda s: False, timeout=SETTLE_S)
    assert receiver.spans() == []
    assert agent.stop() == 0
    assert "TLS: hooked" not in agent.stderr
    counts = summary_counts(agent)
    assert counts["spans"] == 0
    assert counts.get("encrypted", 0) >= 1, agent.stderr


def _coverage(status_dir: Path, *args: str) -> str:
    result = subprocess.run(
        [PYTHON, "-m", "otelbpf.cli", "coverage", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "OTELBPF_STATUS_DIR": str(status_dir)},
    )
    return result.stdout


def _libssl_row(table: str, pid: int) -> list[str]:
    rows = [line.split() for line in table.splitlines() if line.startswith(f"{pid} ")]
    assert len(rows) == 1, table
    return rows[0]


def test_coverage_shows_the_library_and_whether_the_agent_hooked_it(
    receiver, tls_server, start_agent, tmp_path
):
    server, _port = tls_server
    # this test's agent writes its status where this test reads it (other agents elsewhere)
    status_dir = tmp_path / "status"
    # no agent: what it would hook
    before = _coverage(status_dir, "--pid", str(server.pid))
    assert before.splitlines()[0] == "no otelbpf agent is running: showing what it would hook"
    row = _libssl_row(before, server.pid)
    assert row[2] == "openssl" and row[3].endswith("/libssl.so.3")
    assert row[-3:] == ["agent", "not", "running"]
    # an agent tracing it: hooked
    env = {**agent_env(receiver), "OTELBPF_STATUS_DIR": str(status_dir)}
    agent = start_agent(["--pid", str(server.pid)], env)
    assert wait_for_log(receiver, agent, r"TLS: hooked .*libssl")
    receiver.wait_for_spans(lambda _s: any(status_dir.glob("status-*.json")), timeout=10)
    during = _coverage(status_dir, "--pid", str(server.pid))
    row = _libssl_row(during, server.pid)
    assert row[-1] == "yes"
    # "yes" means uprobes attached, not that the library was found: the agent's own count
    (status_file,) = status_dir.glob("status-*.json")
    libraries = json.loads(status_file.read_text())["libraries"]
    path = os.path.realpath(row[3])
    (libssl,) = [lib for lib in libraries if os.path.realpath(lib["path"]) == path]
    assert libssl["uprobes"] >= len(libssl["hooks"]) > 0
    assert libssl["uprobe_errors"] == []
    assert "SSL_read," in row and "SSL_write_ex" in row
