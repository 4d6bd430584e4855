"""End to end: HTTP/2 and gRPC. Real grpcio servers and clients (apps/grpc_server.py,
apps/grpc_client.py: no generated code, raw bytes), the distribution's nginx over h2c (prior
knowledge) and h2 over TLS (ALPN), and curl, all traced by the real agent and exported to a
real OTLP receiver. Each HTTP/2 stream is one span: gRPC calls by the RPC conventions, other
requests by the HTTP ones with network.protocol.version "2".
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import agent_env, require
from tests.e2e.harness import (
    APPS,
    PYTHON,
    AgentProcess,
    Background,
    NginxServer,
    free_port,
    histogram_counts,
    latest_histograms,
    self_signed_cert,
)
from tests.otlp_receiver import OtlpReceiver, ReceivedMetricPoint, ReceivedSpan

MS = 1_000_000
PYTHON_EXE = os.path.basename(os.path.realpath(PYTHON))
SETTLE_S = 1.5  # how long "nothing more arrives" is watched for
SERVICE = "helloworld.Greeter"
SAY_HELLO_PATH = f"/{SERVICE}/SayHello"
HEADERS_INCOMPLETE = "otelbpf.http2.headers_incomplete"


# ---------------------------------------------------------------- helpers


def of_kind(spans: list[ReceivedSpan], kind: str, pid: int | None = None) -> list[ReceivedSpan]:
    return sorted(
        (
            s
            for s in spans
            if s.kind == kind and (pid is None or s.resource.get("process.pid") == pid)
        ),
        key=lambda s: s.start_ns,
    )


def settle(receiver: OtlpReceiver) -> list[ReceivedSpan]:
    """Watch that nothing more arrives (no duplicate or ghost spans), then return all spans."""
    receiver.wait_for_spans(lambda _s: False, timeout=SETTLE_S)
    return receiver.spans()


def attrs(**values: object) -> frozenset:
    """A metric attribute set, written with dots as double underscores."""
    return frozenset((key.replace("__", "."), value) for key, value in values.items())


# ---------------------------------------------------------------- gRPC fixtures


@pytest.fixture
def grpc_server() -> Iterator[tuple[Background, int]]:
    port = free_port()
    server = Background([PYTHON, str(APPS / "grpc_server.py"), str(port)], ready_line="ready")
    yield server, port
    server.stop()


def start_grpc_client(port: int) -> Background:
    """One process, one channel: every command it is sent runs on the same connection."""
    return Background([PYTHON, str(APPS / "grpc_client.py"), str(port)], ready_line="ready")


def close_grpc_client(client: Background) -> None:
    """End of input: the client closes its channel (and its connection) and exits."""
    if client.process.poll() is None:
        client.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            client.process.wait(10)
    client.stop()


def client_local_port(pid: int, server_port: int) -> int:
    """The local port of the one connection process pid holds to server_port."""
    ports = [
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == server_port and c.status == psutil.CONN_ESTABLISHED
    ]
    assert len(ports) == 1, f"expected one connection to :{server_port}, found {ports}"
    return ports[0]


def grpc_attributes(
    kind: str, method: str, code: int, port: int, client_port: int, error: bool
) -> dict[str, object]:
    expected: dict[str, object] = {
        "rpc.system": "grpc",
        "rpc.service": SERVICE,
        "rpc.method": method,
        "rpc.grpc.status_code": code,
        "network.protocol.version": "2",
        "server.address": "127.0.0.1",  # from :authority, "127.0.0.1:PORT"
        "server.port": port,
    }
    if kind == "SERVER":
        expected["client.address"] = "127.0.0.1"
        expected["client.port"] = client_port
    if error:
        expected["error.type"] = str(code)
    return expected


# ---------------------------------------------------------------- gRPC tests


# No test here asserts that a client span encloses its server span: each end is timed when
# its own process's call returns (a syscall exit, or a TLS library's return probe), and the
# reader's can come first (seen over TLS: the server's SSL_write returned 46 us after curl's
# SSL_read had).


def test_grpc_unary_errors_and_server_streaming(receiver, grpc_server, start_agent):
    server, port = grpc_server
    # --port: the server already listens on it; the client connects to it after the agent
    # started, so its connection is seen from the HTTP/2 client preface on
    agent = start_agent(["--port", str(port)], agent_env(receiver))
    client = start_grpc_client(port)
    try:
        assert client.send("unary world") == "ok hello world"
        assert client.send("unary again") == "ok hello again"
        assert client.send("unary missing") == "status NOT_FOUND"
        assert client.send("unary crash") == "status INTERNAL"
        assert client.send("stream x") == "stream 3"
        client_port = client_local_port(client.pid, port)
        receiver.wait_for_spans(
            lambda s: (
                len(of_kind(s, "SERVER", server.pid)) >= 5
                and len(of_kind(s, "CLIENT", client.pid)) >= 5
            ),
            timeout=15,
        )
        settle(receiver)
    finally:
        close_grpc_client(client)
    # closing the channel (GOAWAY, then close) must not add spans either
    spans = settle(receiver)
    servers = of_kind(spans, "SERVER", server.pid)
    clients = of_kind(spans, "CLIENT", client.pid)
    assert (len(servers), len(clients)) == (5, 5), agent.stderr
    assert len(spans) == 10  # nothing from any other process, no other kind

    calls = [  # (method, grpc status, server span is an error, client span is an error)
        ("SayHello", 0, False, False),
        ("SayHello", 0, False, False),
        # NOT_FOUND is the caller's problem: not an error on the server (the conventions'
        # server rule: only 2, 4, 12, 13, 14, 15), an error on the client (any non-OK code)
        ("SayHello", 5, False, True),
        ("SayHello", 13, True, True),  # INTERNAL: an error on both sides
        ("SayHelloStream", 0, False, False),  # three messages, still one call, one span
    ]
    for (method, code, server_error, client_error), srv, cli in zip(
        calls, servers, clients, strict=True
    ):
        assert srv.name == cli.name == f"{SERVICE}/{method}"
        assert srv.attributes == grpc_attributes(
            "SERVER", method, code, port, client_port, server_error
        )
        assert cli.attributes == grpc_attributes(
            "CLIENT", method, code, port, client_port, client_error
        )
        assert srv.status_code == ("ERROR" if server_error else "UNSET")
        assert cli.status_code == ("ERROR" if client_error else "UNSET")
    for span in servers[:2] + clients[:2]:
        assert span.duration_ns >= 20 * MS  # the handler sleeps 20 ms
    for span in servers:
        assert span.resource["service.name"] == PYTHON_EXE
        assert span.resource["process.pid"] == server.pid
    for span in clients:
        assert span.resource["service.name"] == PYTHON_EXE
        assert span.resource["process.pid"] == client.pid

    # call durations: one series per method and status, on each side
    def rpc_counts(points: list[ReceivedMetricPoint], name: str, pid: int) -> dict:
        return histogram_counts(points, name, {pid})

    def complete(points: list[ReceivedMetricPoint]) -> bool:
        return (
            sum(rpc_counts(points, "rpc.server.call.duration", server.pid).values()) >= 5
            and sum(rpc_counts(points, "rpc.client.call.duration", client.pid).values()) >= 5
        )

    points = receiver.wait_for_metrics(complete, timeout=15)
    base = {"rpc__system": "grpc", "rpc__service": SERVICE, "server__port": port}
    # error.type on a duration point follows the span's error rule (as for HTTP)
    assert rpc_counts(points, "rpc.server.call.duration", server.pid) == {
        attrs(**base, rpc__method="SayHello", rpc__grpc__status_code=0): 2,
        attrs(**base, rpc__method="SayHello", rpc__grpc__status_code=5): 1,
        attrs(**base, rpc__method="SayHello", rpc__grpc__status_code=13, error__type="13"): 1,
        attrs(**base, rpc__method="SayHelloStream", rpc__grpc__status_code=0): 1,
    }
    assert rpc_counts(points, "rpc.client.call.duration", client.pid) == {
        attrs(**base, rpc__method="SayHello", rpc__grpc__status_code=0): 2,
        attrs(**base, rpc__method="SayHello", rpc__grpc__status_code=5, error__type="5"): 1,
        attrs(**base, rpc__method="SayHello", rpc__grpc__status_code=13, error__type="13"): 1,
        attrs(**base, rpc__method="SayHelloStream", rpc__grpc__status_code=0): 1,
    }
    for name, pid in (
        ("rpc.server.call.duration", server.pid),
        ("rpc.client.call.duration", client.pid),
    ):
        ok = latest_histograms(points, name, {pid})[
            attrs(**base, rpc__method="SayHello", rpc__grpc__status_code=0)
        ]
        assert ok.unit == "s"
        assert ok.sum >= 2 * 0.020  # two calls whose handler sleeps 20 ms


AFTER_CALLS = 3


@dataclass
class JoinedChannel:
    agent: AgentProcess
    port: int
    server_pid: int
    client_pid: int
    client_port: int
    spans_while_open: list[ReceivedSpan]
    spans_after_close: list[ReceivedSpan]
    spans_after_stop: list[ReceivedSpan]  # the agent flushes what it holds when it stops


def calls_on_a_channel_opened_before_the_agent(
    receiver: OtlpReceiver, grpc_server: tuple[Background, int], start_agent
) -> JoinedChannel:
    """One call on a channel, then the agent starts, then AFTER_CALLS more on that channel."""
    server, port = grpc_server
    client = start_grpc_client(port)
    try:
        assert client.send("unary before") == "ok hello before"
        client_port = client_local_port(client.pid, port)
        agent = start_agent(["--port", str(port)], agent_env(receiver))
        for i in range(AFTER_CALLS):
            assert client.send(f"unary after{i}") == f"ok hello after{i}"
        assert client_local_port(client.pid, port) == client_port  # still the one connection
        receiver.wait_for_spans(
            lambda s: (
                len(of_kind(s, "SERVER", server.pid)) >= AFTER_CALLS
                and len(of_kind(s, "CLIENT", client.pid)) >= AFTER_CALLS
            ),
            timeout=15,
        )
        while_open = settle(receiver)
    finally:
        close_grpc_client(client)
    after_close = settle(receiver)
    assert agent.stop() == 0
    return JoinedChannel(
        agent,
        port,
        server.pid,
        client.pid,
        client_port,
        while_open,
        after_close,
        receiver.spans(),
    )


def test_grpc_channel_opened_before_the_agent_counts_stay_exact(receiver, grpc_server, start_agent):
    joined = calls_on_a_channel_opened_before_the_agent(receiver, grpc_server, start_agent)
    port = joined.port
    # every call made after the agent started is one span on each side, and each arrives
    # while the channel is still open (not only when its connection closes)
    servers = of_kind(joined.spans_while_open, "SERVER", joined.server_pid)
    clients = of_kind(joined.spans_while_open, "CLIENT", joined.client_pid)
    assert (len(servers), len(clients)) == (AFTER_CALLS, AFTER_CALLS), joined.agent.stderr
    # closing the connection, then stopping the agent, adds nothing: no ghost of a stream
    # the agent lost track of
    for spans in (joined.spans_after_close, joined.spans_after_stop):
        servers = of_kind(spans, "SERVER", joined.server_pid)
        clients = of_kind(spans, "CLIENT", joined.client_pid)
        assert (len(servers), len(clients)) == (AFTER_CALLS, AFTER_CALLS), joined.agent.stderr
        assert len(spans) == 2 * AFTER_CALLS

    for span in servers + clients:
        assert span.attributes["network.protocol.version"] == "2"
        # grpcio's HPACK encoder (gRPC core) adds :path, content-type, te, user-agent,
        # grpc-accept-encoding and the like to its dynamic table on the connection's first
        # call, and refers to them by index on every later call; the server's encoder does
        # the same with its response headers and grpc-status trailer. The "before" call
        # inserted them before the agent ran, so EVERY call after it (not only the first)
        # refers to entries the agent never saw: all of them are marked incomplete.
        assert span.attributes[HEADERS_INCOMPLETE] is True
        # every call succeeded: no span may say otherwise (an unreadable grpc-status, or a
        # stream taken for reset, is not a failure of the call)
        assert span.status_code == "UNSET", span
        assert "error.type" not in span.attributes
        assert span.duration_ns >= 20 * MS  # the handler sleeps 20 ms
    for span in servers:
        assert span.attributes["server.port"] == port
        assert span.attributes["client.address"] == "127.0.0.1"
        assert span.attributes["client.port"] == joined.client_port
        assert span.resource["process.pid"] == joined.server_pid
    for span in clients:
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["server.port"] == port
        assert span.resource["process.pid"] == joined.client_pid


def test_grpc_channel_opened_before_the_agent_spans_say_nothing_false(
    receiver, grpc_server, start_agent
):
    """What the agent could not decode may be missing from a span, never replaced by a value
    that is not true: the calls went to /helloworld.Greeter/SayHello, not to "/"."""
    joined = calls_on_a_channel_opened_before_the_agent(receiver, grpc_server, start_agent)
    port = joined.port
    true_values = {
        "rpc.system": "grpc",
        "rpc.service": SERVICE,
        "rpc.method": "SayHello",
        "rpc.grpc.status_code": 0,
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "url.path": SAY_HELLO_PATH,
        "http.route": SAY_HELLO_PATH,
        "url.full": f"http://127.0.0.1:{port}{SAY_HELLO_PATH}",
        "url.scheme": "http",
    }
    spans = of_kind(joined.spans_while_open, "SERVER", joined.server_pid) + of_kind(
        joined.spans_while_open, "CLIENT", joined.client_pid
    )
    assert spans, joined.agent.stderr
    for span in spans:
        # a gRPC span by its method; "grpc" when only gRPC's own headers told it was gRPC
        # (true, and all that is known); or an HTTP span that knows only its method (the
        # conventions' name when the route is not known)
        assert span.name in (f"{SERVICE}/SayHello", "grpc", "POST"), span
        if span.name == "grpc":
            assert span.attributes["rpc.system"] == "grpc"
            assert "rpc.method" not in span.attributes and "url.path" not in span.attributes
        for key, value in true_values.items():
            if key in span.attributes:
                assert span.attributes[key] == value, (key, span)


# ---------------------------------------------------------------- nginx and curl

INDEX = "hello from nginx over h2\n"
ITEM = "item\n"


class H2Nginx(NginxServer):
    """nginx 1.22 serving h2c (prior knowledge) on one port and h2 over TLS on another."""

    def __init__(self, directory: Path) -> None:
        self.h2c_port = free_port()
        self.tls_port = free_port()
        while self.tls_port == self.h2c_port:
            self.tls_port = free_port()
        require("openssl")
        cert, key = self_signed_cert(directory)
        super().__init__(
            directory,
            [self.h2c_port, self.tls_port],
            http="",
            server=f"""\
        listen 127.0.0.1:{self.h2c_port} http2;
        listen 127.0.0.1:{self.tls_port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location = /fail {{ return 500; }}""",
            www={"index.html": INDEX.encode(), "items/1234": ITEM.encode()},
        )


@pytest.fixture
def h2_nginx(tmp_path: Path) -> Iterator[H2Nginx]:
    server = H2Nginx(tmp_path)
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Transfer:
    url: str
    status: int
    http_version: str
    local_port: int
    size: int


def curl_transfers(*args: str, urls: list[str]) -> list[Transfer]:
    """ONE curl process fetching urls; what curl reports about each transfer."""
    outputs = [arg for _ in urls for arg in ("-o", "/dev/null")]
    result = subprocess.run(
        [
            require("curl"),
            "-sS",
            *outputs,
            "-w",
            "%{url_effective} %{http_code} %{http_version} %{local_port} %{size_download}\n",
            *args,
            *urls,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    transfers = []
    for line in result.stdout.splitlines():
        url, status, version, local_port, size = line.split()
        transfers.append(Transfer(url, int(status), version, int(local_port), int(size)))
    assert sorted(t.url for t in transfers) == sorted(urls)
    return transfers


@functools.cache
def curl_user_agent() -> str:
    """curl's own User-Agent ("curl/7.88.1"); asked before the agent starts (it is a curl)."""
    version = subprocess.run(
        [require("curl"), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    return f"curl/{version}"


def nginx_and_curl_spans(
    receiver: OtlpReceiver, nginx: H2Nginx, port: int, n: int
) -> tuple[list[ReceivedSpan], list[ReceivedSpan]]:
    """The server spans of nginx's worker and the client spans of calls to port; exactly what
    arrived after a settle. (--exe curl traces every curl on the host: only calls to this
    nginx's port are this test's.)"""
    workers = nginx.worker_pids()

    def servers_of(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in of_kind(spans, "SERVER") if s.resource.get("process.pid") in workers]

    def clients_of(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in of_kind(spans, "CLIENT") if s.attributes.get("server.port") == port]

    receiver.wait_for_spans(
        lambda s: len(servers_of(s)) >= n and len(clients_of(s)) >= n, timeout=15
    )
    spans = settle(receiver)
    return servers_of(spans), clients_of(spans)


def check_nginx_server_span(
    span: ReceivedSpan, transfer: Transfer, scheme: str, port: int, route: str, body: int
) -> None:
    path = transfer.url.split(str(port), 1)[1]
    assert span.name == f"GET {route}"
    assert span.resource["service.name"] == "nginx"
    attributes = span.attributes
    assert attributes["network.protocol.version"] == "2"
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.scheme"] == scheme
    assert attributes["url.path"] == path
    assert "url.query" not in attributes
    assert attributes["http.route"] == route
    assert attributes["http.response.status_code"] == transfer.status
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == port
    assert attributes["client.address"] == "127.0.0.1"
    assert attributes["client.port"] == transfer.local_port
    assert attributes["user_agent.original"] == curl_user_agent()
    assert attributes["http.response.body.size"] == body
    assert HEADERS_INCOMPLETE not in attributes  # seen from the preface on
    if transfer.status >= 500:
        assert span.status_code == "ERROR"
        assert attributes["error.type"] == str(transfer.status)
    else:  # a 404 is the client's fault: not an error on the server
        assert span.status_code == "UNSET"
        assert "error.type" not in attributes


def check_curl_client_span(span: ReceivedSpan, transfer: Transfer, port: int, route: str) -> None:
    assert span.name == f"GET {route}"
    expected: dict[str, object] = {
        "http.request.method": "GET",
        "network.protocol.version": "2",
        "http.response.status_code": transfer.status,
        "url.full": transfer.url,
        "server.address": "127.0.0.1",
        "server.port": port,
    }
    if transfer.status >= 400:
        expected["error.type"] = str(transfer.status)
    assert span.attributes == expected
    assert span.status_code == ("ERROR" if transfer.status >= 400 else "UNSET")


def test_nginx_h2c_prior_knowledge_and_curl(receiver, h2_nginx, start_agent):
    port = h2_nginx.h2c_port
    curl_user_agent()
    start_agent(["--pid", str(h2_nginx.master_pid), "--exe", "curl"], agent_env(receiver))
    base = f"http://127.0.0.1:{port}"
    urls = [f"{base}/index.html", f"{base}/missing"]
    # One curl process, two h2c connections side by side (-Z --parallel-immediate). curl
    # 7.88.1 cannot reuse a prior-knowledge connection for a second URL ("Error in the HTTP2
    # framing layer", without the agent too), so several streams on one connection are
    # covered over TLS below, and by the gRPC tests. One process per test, because --exe is
    # matched in user space: a curl exec'd while the agent is still busy with the previous
    # one (it scans each new executable for TLS code) can finish before it is selected.
    transfers = {
        t.url: t
        for t in curl_transfers("--http2-prior-knowledge", "-Z", "--parallel-immediate", urls=urls)
    }
    assert {t.http_version for t in transfers.values()} == {"2"}
    assert [transfers[u].status for u in urls] == [200, 404]
    assert transfers[urls[0]].local_port != transfers[urls[1]].local_port

    servers, clients = nginx_and_curl_spans(receiver, h2_nginx, port, 2)
    assert (len(servers), len(clients)) == (2, 2)
    by_path = {s.attributes["url.path"]: s for s in servers}
    check_nginx_server_span(
        by_path["/index.html"], transfers[urls[0]], "http", port, "/index.html", len(INDEX)
    )
    check_nginx_server_span(
        by_path["/missing"], transfers[urls[1]], "http", port, "/missing", transfers[urls[1]].size
    )
    by_url = {s.attributes["url.full"]: s for s in clients}
    check_curl_client_span(by_url[urls[0]], transfers[urls[0]], port, "/index.html")
    check_curl_client_span(by_url[urls[1]], transfers[urls[1]], port, "/missing")
    # curl has exited when its spans are built: its resource still names it
    assert {s.resource["service.name"] for s in clients} == {"curl"}


def test_nginx_h2_over_tls_several_streams_on_one_connection(receiver, h2_nginx, start_agent):
    port = h2_nginx.tls_port
    curl_user_agent()
    start_agent(["--pid", str(h2_nginx.master_pid), "--exe", "curl"], agent_env(receiver))
    base = f"https://127.0.0.1:{port}"
    paths = ["/index.html", "/items/1234", "/missing", "/fail"]
    routes = ["/index.html", "/items/{id}", "/missing", "/fail"]
    urls = [base + path for path in paths]
    # ALPN h2; one curl, one connection, one stream per URL (streams 1, 3, 5, 7)
    transfers = curl_transfers("--http2", "-k", urls=urls)
    assert [t.url for t in transfers] == urls
    assert [t.status for t in transfers] == [200, 200, 404, 500]
    assert {t.http_version for t in transfers} == {"2"}
    assert len({t.local_port for t in transfers}) == 1  # one connection

    servers, clients = nginx_and_curl_spans(receiver, h2_nginx, port, 4)
    assert (len(servers), len(clients)) == (4, 4)
    bodies = [len(INDEX), len(ITEM), transfers[2].size, transfers[3].size]
    for span, transfer, route, body in zip(servers, transfers, routes, bodies, strict=True):
        check_nginx_server_span(span, transfer, "https", port, route, body)
    for span, transfer, route in zip(clients, transfers, routes, strict=True):
        check_curl_client_span(span, transfer, port, route)

    # request durations: HTTP metrics, with protocol version "2"
    workers = h2_nginx.worker_pids()
    curl_pids = {s.resource["process.pid"] for s in clients}
    assert len(curl_pids) == 1

    def counts(points: list[ReceivedMetricPoint]) -> tuple[dict, dict]:
        server_counts = histogram_counts(points, "http.server.request.duration", workers)
        client_counts = {
            key: count
            for key, count in histogram_counts(
                points, "http.client.request.duration", curl_pids
            ).items()
            if ("server.port", port) in key
        }
        return server_counts, client_counts

    points = receiver.wait_for_metrics(
        lambda pts: sum(counts(pts)[0].values()) >= 4 and sum(counts(pts)[1].values()) >= 4,
        timeout=15,
    )
    server_counts, client_counts = counts(points)
    common = {"http__request__method": "GET", "network__protocol__version": "2"}
    server_common = {**common, "url__scheme": "https"}  # server.port: Opt-In on the server
    assert server_counts == {
        attrs(**server_common, http__route="/index.html", http__response__status_code=200): 1,
        attrs(**server_common, http__route="/items/{id}", http__response__status_code=200): 1,
        attrs(**server_common, http__route="/missing", http__response__status_code=404): 1,
        attrs(
            **server_common,
            http__route="/fail",
            http__response__status_code=500,
            error__type="500",
        ): 1,
    }
    client_common = {**common, "server__address": "127.0.0.1", "server__port": port}
    assert client_counts == {
        attrs(**client_common, http__response__status_code=200): 2,
        attrs(**client_common, http__response__status_code=404, error__type="404"): 1,
        attrs(**client_common, http__response__status_code=500, error__type="500"): 1,
    }

    # curl has exited when its spans are built: its resource still names it
    assert {s.resource["service.name"] for s in clients} == {"curl"}
