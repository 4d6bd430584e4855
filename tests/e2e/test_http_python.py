"""End to end: a real threaded Python http.server and real clients, traced by the real agent,
exported to a real OTLP receiver."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess

import pytest

from tests.e2e.conftest import PROBE_MODES, agent_env, require
from tests.e2e.harness import (
    APPS,
    PYTHON,
    Background,
    curl,
    free_port,
    python_client,
    server_requests_counted,
)
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

MS = 1_000_000
SERVER_EXE = os.path.basename(os.path.realpath(PYTHON))


def server_spans(spans: list[ReceivedSpan], pid: int) -> list[ReceivedSpan]:
    return [s for s in spans if s.kind == "SERVER" and s.resource.get("process.pid") == pid]


def wait_server_spans(
    receiver: OtlpReceiver, pid: int, n: int, timeout: float = 15
) -> list[ReceivedSpan]:
    spans = receiver.wait_for_spans(lambda all_: len(server_spans(all_, pid)) >= n, timeout)
    return server_spans(spans, pid)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_keepalive_requests_give_one_span_each(receiver, server, start_agent, protocol):
    proc, port = server
    start_agent(["--pid", str(proc.pid)], agent_env(receiver, protocol))

    python_client("keepalive", "127.0.0.1", port, "/users/7?token=secret&page=2", 5)

    spans = wait_server_spans(receiver, proc.pid, 5)
    assert len(spans) == 5
    for span in spans:
        assert span.name == "GET /users/{id}"
        assert span.status_code == "UNSET"
        attrs = span.attributes
        assert attrs["http.request.method"] == "GET"
        assert attrs["url.path"] == "/users/7"
        assert attrs["url.query"] == "token=REDACTED&page=REDACTED"
        assert attrs["url.scheme"] == "http"
        assert attrs["http.route"] == "/users/{id}"
        assert attrs["http.response.status_code"] == 200
        assert attrs["server.address"] == "127.0.0.1"
        assert attrs["server.port"] == port
        assert attrs["client.address"] == "127.0.0.1"
        assert attrs["network.protocol.version"] == "1.1"
        assert "user_agent.original" not in attrs  # http.client sends none
        assert attrs["http.response.body.size"] == 5
        assert attrs["http.request.body.size"] == 0
        assert span.end_ns >= span.start_ns
        assert span.resource["service.name"] == SERVER_EXE
        assert span.resource["process.executable.name"] == SERVER_EXE
        assert span.resource["process.pid"] == proc.pid
    # one connection: every span has the same client port
    assert len({s.attributes["client.port"] for s in spans}) == 1
    assert len({s.trace_id for s in spans}) == 5


@pytest.mark.parametrize("probe_mode", PROBE_MODES)
def test_concurrent_connections(receiver, server, start_agent, probe_mode):
    proc, port = server
    start_agent(["--pid", str(proc.pid)], agent_env(receiver, probe_mode=probe_mode))

    python_client("concurrent", "127.0.0.1", port, 8, 3)

    spans = wait_server_spans(receiver, proc.pid, 24)
    assert len(spans) == 24
    assert len({s.attributes["client.port"] for s in spans}) == 8
    assert sorted(s.attributes["url.path"] for s in spans) == sorted(
        f"/users/{t * 100 + i}" for t in range(8) for i in range(3)
    )
    assert {s.name for s in spans} == {"GET /users/{id}"}


def test_post_404_500_and_handler_duration(receiver, server, start_agent):
    proc, port = server
    require("curl")
    start_agent(["--pid", str(proc.pid)], agent_env(receiver))
    base = f"http://127.0.0.1:{port}"

    assert curl("-X", "POST", "--data-binary", "x" * 1000, f"{base}/echo").stdout == "201"
    assert curl(f"{base}/status/404").stdout == "404"
    assert curl(f"{base}/status/500").stdout == "500"
    assert curl(f"{base}/slow").stdout == "200"

    spans = {s.attributes["url.path"]: s for s in wait_server_spans(receiver, proc.pid, 4)}
    assert len(spans) == 4
    post = spans["/echo"]
    assert post.name == "POST /echo"
    assert post.attributes["http.request.method"] == "POST"
    assert post.attributes["http.request.body.size"] == 1000
    assert post.attributes["http.response.status_code"] == 201
    assert post.attributes["user_agent.original"].startswith("curl/")
    assert spans["/status/404"].attributes["http.response.status_code"] == 404
    assert spans["/status/404"].status_code == "UNSET"  # 4xx is the client's fault on a server
    assert spans["/status/500"].attributes["http.response.status_code"] == 500
    assert spans["/status/500"].status_code == "ERROR"
    assert spans["/status/500"].attributes["error.type"] == "500"
    assert "error.type" not in spans["/status/404"].attributes
    assert spans["/status/500"].name == "GET /status/{id}"
    # the handler sleeps 20 ms: the span cannot be shorter
    assert spans["/slow"].duration_ns >= 20 * MS


def test_a_request_with_trace_context_continues_its_trace(receiver, server, start_agent):
    """The W3C headers a caller's instrumentation sent: the server span joins that trace, under
    the caller's span, with the caller's tracestate; a request without them starts a trace."""
    proc, port = server
    require("curl")
    start_agent(["--pid", str(proc.pid)], agent_env(receiver))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    base = f"http://127.0.0.1:{port}"
    context = ["-H", f"traceparent: 00-{trace_id}-{parent_id}-01", "-H", "tracestate: vendor=a"]
    assert curl(*context, f"{base}/joined").stdout == "200"
    assert curl(f"{base}/root").stdout == "200"

    spans = {s.attributes["url.path"]: s for s in wait_server_spans(receiver, proc.pid, 2)}
    joined, root = spans["/joined"], spans["/root"]
    assert (joined.trace_id, joined.parent_span_id, joined.trace_state) == (
        trace_id,
        parent_id,
        "vendor=a",
    )
    assert joined.span_id not in ("", parent_id)
    assert (root.parent_span_id, root.trace_state) == ("", "")
    assert root.trace_id != trace_id


def test_request_head_longer_than_its_buffer(receiver, server, start_agent):
    """A request head that fills the kernel's request buffer (1 KiB) puts the response head at
    the far end of the buffers: the status still comes through, and the request line too."""
    proc, port = server
    require("curl")
    start_agent(["--pid", str(proc.pid)], agent_env(receiver))

    base = f"http://127.0.0.1:{port}"
    padding = "p" * 3000  # the head is over 3 KiB: only its first 1 KiB is captured
    assert curl("-H", f"X-Padding: {padding}", f"{base}/status/404").stdout == "404"
    assert curl(f"{base}/status/500").stdout == "500"  # a short one after it

    spans = {s.attributes["url.path"]: s for s in wait_server_spans(receiver, proc.pid, 2)}
    assert sorted(spans) == ["/status/404", "/status/500"]
    long_head = spans["/status/404"].attributes
    assert long_head["http.request.method"] == "GET"
    assert long_head["http.response.status_code"] == 404
    assert spans["/status/500"].attributes["http.response.status_code"] == 500


def test_chunked_and_one_mebibyte_responses(receiver, server, start_agent):
    proc, port = server
    start_agent(["--pid", str(proc.pid)], agent_env(receiver))

    assert curl(f"http://127.0.0.1:{port}/chunked").stdout == "200"
    # The client reads the head, waits 300 ms, then drains: with a small receive buffer the
    # server's writes block until then, so the span must last at least that long.
    result = python_client("slowread", "127.0.0.1", port, "/big", 0.3)
    assert result.stdout.strip().startswith("read ")

    spans = {s.attributes["url.path"]: s for s in wait_server_spans(receiver, proc.pid, 2)}
    chunked = spans["/chunked"]
    assert chunked.attributes["http.response.status_code"] == 200
    # three chunks with their framing:
    # "5\r\nfirst\r\n" "6\r\nsecond\r\n" "5\r\nthird\r\n" "0\r\n\r\n"
    assert chunked.attributes["http.response.body.size"] == 10 + 11 + 10 + 5
    big = spans["/big"]
    assert big.attributes["http.response.body.size"] == 1 << 20
    assert big.duration_ns >= 300 * MS


@pytest.mark.parametrize("io_args", ["socket", "exit", "entry"])
def test_connection_opened_before_the_agent(receiver, server, start_agent, io_args):
    """The server thread is blocked in its read when the probes attach. Every way of getting
    a read's arguments: from the registers inside the socket's receive (socket tracepoints,
    this kernel's default) or at the syscall's exit (syscall tracepoints on kernels before
    6.5), and from the entry hook, with the blocked call seeded from /proc (kernels without
    bpf_task_pt_regs)."""
    proc, port = server
    env = agent_env(receiver)
    env["OTELBPF_PROBE_MODE"] = "socket" if io_args == "socket" else "tracepoint"
    if io_args == "entry":
        env["OTELBPF_IO_ARGS"] = "entry"
    client = Background(
        [PYTHON, str(APPS / "http_client.py"), "interactive", "127.0.0.1", str(port)]
    )
    try:
        assert client.process.stdout.readline().strip() == "connected"
        assert client.send("/before") == "done 200"
        agent = start_agent(["--pid", str(proc.pid)], env)
        expected = {
            "socket": "socket tracepoints: arguments read from the user registers",
            "exit": "arguments read from the user registers at the exit",
            "entry": "arguments kept from the entry hooks",
        }[io_args]
        assert f"read and write arguments: {expected}" in agent.stderr
        assert client.send("/after/1") == "done 200"
        assert client.send("/after/2") == "done 200"
        spans = wait_server_spans(receiver, proc.pid, 2)
    finally:
        client.stop()
    receiver.wait_for_spans(lambda s: False, timeout=1.0)  # nothing else may arrive
    spans = server_spans(receiver.spans(), proc.pid)
    assert sorted(s.attributes["url.path"] for s in spans) == ["/after/1", "/after/2"]
    for span in spans:
        assert span.kind == "SERVER"  # the role came from /proc: the local port listens
        assert span.attributes["client.address"] == "127.0.0.1"
        assert span.attributes["server.port"] == port


def test_idle_sweep_emits_the_last_exchange_of_an_open_connection(receiver, server, start_agent):
    """The last answer on a keep-alive connection has no next request to close it: the idle
    sweep emits it, with the connection still open, and again after the next request."""
    proc, port = server
    start_agent(["--pid", str(proc.pid), "--idle-flush-ms", "300"], agent_env(receiver))
    client = Background(
        [PYTHON, str(APPS / "http_client.py"), "interactive", "127.0.0.1", str(port)]
    )
    try:
        assert client.process.stdout.readline().strip() == "connected"
        for path in ("/idle/1", "/idle/2", "/idle/3"):  # each closed by the next but the last
            assert client.send(path) == "done 200"
        paths = [s.attributes["url.path"] for s in wait_server_spans(receiver, proc.pid, 3)]
        assert sorted(paths) == ["/idle/1", "/idle/2", "/idle/3"]
        assert client.send("/idle/4") == "done 200"  # after a sweep emitted /idle/3
        spans = wait_server_spans(receiver, proc.pid, 4)
        assert client.process.poll() is None  # none of it waited for the connection to close
    finally:
        client.stop()
    assert sorted(s.attributes["url.path"] for s in spans) == [f"/idle/{n}" for n in (1, 2, 3, 4)]


def test_idle_exchange_whose_answered_slot_a_later_connection_took(receiver, server, start_agent):
    """The kernel marks answered exchanges in slot conn_id % slots (twice --max-connections:
    32 here). Connection 0 is answered and left open; 31 short connections follow; connection
    32 takes its slot. The sweep's look at every connection still emits connection 0's last
    exchange while it stays open."""
    proc, port = server
    start_agent(
        ["--pid", str(proc.pid), "--max-connections", "16", "--idle-flush-ms", "1000"],
        agent_env(receiver),
    )
    first = Background(
        [PYTHON, str(APPS / "http_client.py"), "interactive", "127.0.0.1", str(port)]
    )
    last = None
    try:
        assert first.process.stdout.readline().strip() == "connected"
        assert first.send("/slot/first") == "done 200"
        for n in range(31):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", f"/slot/short/{n}")
            assert connection.getresponse().read() is not None
            connection.close()
        last = Background(
            [PYTHON, str(APPS / "http_client.py"), "interactive", "127.0.0.1", str(port)]
        )
        assert last.process.stdout.readline().strip() == "connected"
        assert last.send("/slot/last") == "done 200"
        spans = wait_server_spans(receiver, proc.pid, 33, timeout=30)
        assert first.process.poll() is None and last.process.poll() is None
    finally:
        first.stop()
        if last is not None:
            last.stop()
    paths = sorted(s.attributes["url.path"] for s in spans)
    assert paths == sorted(["/slot/first", "/slot/last", *(f"/slot/short/{n}" for n in range(31))])
    stats = receiver.wait_for_spans(lambda s: False, timeout=0.5)
    assert len(server_spans(stats, proc.pid)) == 33  # each once


def test_requests_read_with_recvmsg_and_answered_with_sendmsg(receiver, start_agent):
    """The message-header calls (recvmsg/sendmsg), the response in three slices."""
    port = free_port()
    app = Background([PYTHON, str(APPS / "msg_server.py"), str(port)], ready_line="ready")
    try:
        start_agent(["--pid", str(app.pid)], agent_env(receiver))
        python_client("keepalive", "127.0.0.1", port, "/msg/ok", 2)
        python_client("keepalive", "127.0.0.1", port, "/missing", 1)
        spans = wait_server_spans(receiver, app.pid, 3)
    finally:
        app.stop()
    assert sorted(s.attributes["url.path"] for s in spans) == ["/missing", "/msg/ok", "/msg/ok"]
    for span in spans:
        expected = 404 if span.attributes["url.path"] == "/missing" else 200
        assert span.attributes["http.response.status_code"] == expected
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["http.response.body.size"] == 5  # Content-Length, 3rd slice


@pytest.mark.parametrize("probe_mode", PROBE_MODES)
def test_client_spans_from_a_process_started_after_the_agent(
    receiver, server, start_agent, probe_mode
):
    _proc, port = server
    require("curl")
    start_agent(["--exe", "curl"], agent_env(receiver, probe_mode=probe_mode))

    assert curl(f"http://127.0.0.1:{port}/users/42?q=x").stdout == "200"
    assert curl(f"http://127.0.0.1:{port}/status/503").stdout == "503"

    spans = receiver.wait_for_spans(
        lambda s: len([x for x in s if x.kind == "CLIENT"]) >= 2, timeout=15
    )
    clients = sorted((s for s in spans if s.kind == "CLIENT"), key=lambda s: s.start_ns)
    assert len(clients) == 2
    ok, failed = clients
    assert ok.resource["service.name"] == "curl"
    assert ok.resource["process.executable.name"] == "curl"
    assert ok.name == "GET /users/{id}"
    assert ok.attributes["url.full"] == f"http://127.0.0.1:{port}/users/42?q=REDACTED"
    assert ok.attributes["server.address"] == "127.0.0.1"
    assert ok.attributes["server.port"] == port
    assert ok.attributes["http.request.method"] == "GET"
    assert ok.attributes["http.response.status_code"] == 200
    assert ok.attributes["network.protocol.version"] == "1.1"
    assert ok.status_code == "UNSET"
    assert failed.attributes["http.response.status_code"] == 503
    assert failed.status_code == "ERROR"
    assert failed.attributes["error.type"] == "503"
    assert "error.type" not in ok.attributes
    # no server spans: only curl is traced
    assert [s for s in spans if s.kind == "SERVER"] == []


def test_sigint_flushes_pending_exchanges_and_exits_zero(receiver, server, start_agent):
    proc, port = server
    # an idle flush far in the future: only the shutdown can emit the last exchange
    agent = start_agent(["--pid", str(proc.pid), "--idle-flush-ms", "600000"], agent_env(receiver))
    client = Background(
        [PYTHON, str(APPS / "http_client.py"), "interactive", "127.0.0.1", str(port)]
    )
    try:
        assert client.process.stdout.readline().strip() == "connected"
        assert client.send("/one") == "done 200"
        assert client.send("/two") == "done 200"
        # /one is complete (the next request closed it); /two waits in the kernel
        first = wait_server_spans(receiver, proc.pid, 1)
        assert [s.attributes["url.path"] for s in first] == ["/one"]
        assert agent.stop(signal.SIGINT) == 0
    finally:
        client.stop()
    assert agent.stop_seconds is not None and agent.stop_seconds < 10
    spans = server_spans(receiver.spans(), proc.pid)
    assert sorted(s.attributes["url.path"] for s in spans) == ["/one", "/two"]
    assert "stopped: " in agent.stderr and "Traceback" not in agent.stderr
    # the metrics of both requests were flushed at exit too
    points = [
        p
        for p in receiver.metrics()
        if p.name == "http.server.request.duration" and p.resource.get("process.pid") == proc.pid
    ]
    # cumulative points: the last point of each route's series counts its request
    last_counts: dict[str, int] = {}
    for point in points:
        route = point.attributes["http.route"]
        last_counts[route] = max(last_counts.get(route, 0), point.count)
    assert last_counts == {"/one": 1, "/two": 1}


def _thread_nice(pid: int) -> dict[int, int]:
    nice = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        nice[int(tid)] = int(fields[16])  # field 19 of stat; 17 after pid and (comm) state
    return nice


def _compiler_libraries(pid: int) -> set[str]:
    """bcc's compiler libraries (libbcc.so: clang and LLVM) mapped into process pid."""
    with open(f"/proc/{pid}/maps") as maps:
        return {
            line.split()[-1]
            for line in maps
            if any(name in line for name in ("/libLLVM", "/libclang", "/libbcc.so"))
        }


def test_agent_yields_the_cpu_and_holds_no_compiler(receiver, server, start_agent):
    proc, port = server
    agent = start_agent(["--pid", str(proc.pid)], agent_env(receiver))
    python_client("keepalive", "127.0.0.1", port, "/ping", 2)
    assert len(wait_server_spans(receiver, proc.pid, 2)) == 2  # exporting threads exist
    nice = _thread_nice(agent.process.pid)
    assert len(nice) > 3 and set(nice.values()) == {10}, nice  # every thread, gRPC's too
    # bcc compiles in a child process (or not at all, from the cache): clang and LLVM, 60+ MiB
    # once relocated, are never mapped into the agent
    assert _compiler_libraries(agent.process.pid) == set()
    assert agent.stop() == 0

    agent = start_agent(["--pid", str(proc.pid), "--nice", "0"], agent_env(receiver))
    assert set(_thread_nice(agent.process.pid).values()) == {0}


def test_server_duration_histogram(receiver, server, start_agent):
    proc, port = server
    start_agent(["--pid", str(proc.pid)], agent_env(receiver))

    python_client("keepalive", "127.0.0.1", port, "/slow", 3)
    assert curl(f"http://127.0.0.1:{port}/status/404").stdout == "404"

    receiver.wait_for_metrics(lambda pts: server_requests_counted(pts, proc.pid) >= 4, timeout=15)
    points = [
        p
        for p in receiver.metrics()
        if p.name == "http.server.request.duration" and p.resource.get("process.pid") == proc.pid
    ]
    last = {}
    for p in points:
        last[tuple(sorted(p.attributes.items()))] = p
    slow = last[
        tuple(
            sorted(
                {
                    "http.request.method": "GET",
                    "http.route": "/slow",
                    "http.response.status_code": 200,
                    "url.scheme": "http",
                    "network.protocol.version": "1.1",
                }.items()
            )
        )
    ]
    assert slow.count == 3
    assert slow.unit == "s"
    assert slow.sum >= 3 * 0.020
    assert slow.explicit_bounds == [
        0.005,
        0.01,
        0.025,
        0.05,
        0.075,
        0.1,
        0.25,
        0.5,
        0.75,
        1.0,
        2.5,
        5.0,
        7.5,
        10.0,
    ]
    not_found = [p for k, p in last.items() if ("http.response.status_code", 404) in k]
    assert len(not_found) == 1 and not_found[0].count == 1
    # the agent's own metrics travel the same way
    own = [p for p in receiver.metrics() if p.name == "otelbpf.exchanges"]
    assert own and own[0].resource["service.name"] == "otelbpf"


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_no_selector_traces_everyone_but_not_the_agents_own_exports(
    receiver, server, start_agent, protocol
):
    proc, port = server
    # the agent's exports are HTTP/1 requests (http/protobuf) or HTTP/2 streams (grpc) that
    # the receiver, traced like every process, serves
    start_agent([], agent_env(receiver, protocol))

    python_client("keepalive", "127.0.0.1", port, "/users/1", 2)
    spans = wait_server_spans(receiver, proc.pid, 2)
    assert len(spans) == 2
    receiver.wait_for_spans(lambda s: False, timeout=1.5)
    # the receiver runs in this test's process: the spans it serves (other processes on a
    # shared host may export elsewhere, and are traced too)
    served = [
        s
        for s in receiver.spans()
        if s.kind == "SERVER" and s.resource.get("process.pid") == os.getpid()
    ]
    paths = {s.attributes.get("url.path") for s in served}
    assert "/v1/traces" not in paths and "/v1/metrics" not in paths
    assert not [s.name for s in served if "opentelemetry.proto.collector" in s.name]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_client_address_of_an_accept_without_address_buffer(receiver, start_agent, host):
    """accept(fd, NULL, NULL), as libuv does: the kernel's socket gives the client's address.

    The agent is stopped while the connection opens, serves and closes, so nothing is left in
    /proc to read afterwards: only the address taken in the kernel at accept can be right."""
    port = free_port()
    proc = Background(
        [PYTHON, str(APPS / "null_accept_server.py"), host, str(port)], ready_line="ready"
    )
    try:
        agent = start_agent(["--pid", str(proc.pid)], agent_env(receiver))
        url_host = f"[{host}]" if ":" in host else host
        os.kill(agent.process.pid, signal.SIGSTOP)
        try:
            done = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{local_port}",
                    f"http://{url_host}:{port}/users/1",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
        finally:
            os.kill(agent.process.pid, signal.SIGCONT)
        status, client_port = done.stdout.split()
        assert status == "200"
        spans = wait_server_spans(receiver, proc.pid, 1)
    finally:
        proc.stop()
    assert len(spans) == 1
    attrs = spans[0].attributes
    assert attrs["url.path"] == "/users/1"
    assert attrs["client.address"] == host
    assert attrs["client.port"] == int(client_port)
    assert attrs["server.port"] == port


@pytest.mark.parametrize("probe_mode", PROBE_MODES)
def test_a_connection_whose_close_went_unseen(receiver, start_agent, probe_mode):
    """The server ends each connection with close_range(2), which no probe takes for a close,
    and its next connection gets the same descriptor (and, in the kernel, often the socket
    memory of the one before). Each exchange is emitted once, with its own client's port,
    when the descriptor's next connection replaces its connection: not lost, and not joined to
    the next connection's. The third waits for a fourth, or for the idle sweep, kept out of it
    here by a minute's idle time."""
    port = free_port()
    app = Background([PYTHON, str(APPS / "close_range_server.py"), str(port)], ready_line="ready")
    env = agent_env(receiver, probe_mode=probe_mode)
    paths = ["/first", "/second", "/third"]
    try:
        start_agent(["--pid", str(app.pid), "--idle-flush-ms", "60000"], env)
        client_ports, descriptors = {}, set()
        for path in paths:
            with socket.create_connection(("127.0.0.1", port)) as client:
                client_ports[path] = client.getsockname()[1]
                client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert client.recv(4096).endswith(b"hello")
            descriptors.add(app.process.stdout.readline().strip())
        assert len(descriptors) == 1  # one descriptor number for all three
        wait_server_spans(receiver, app.pid, 2)
        receiver.wait_for_spans(lambda s: False, timeout=1.0)  # nothing else may arrive
        spans = server_spans(receiver.spans(), app.pid)
    finally:
        app.stop()
    got = sorted((s.attributes["url.path"], s.attributes["client.port"]) for s in spans)
    assert got == sorted((path, client_ports[path]) for path in paths[:2])
    for span in spans:
        assert span.attributes["http.response.status_code"] == 200


# A client that half-closes: its request, shutdown(SHUT_WR), then the response read only after
# the server has answered and closed (its socket is in CLOSE by then, its data still queued).
_HALF_CLOSING_CLIENT = """
import socket, sys, time
port = int(sys.argv[1])
print("waiting", flush=True)
sys.stdin.readline()
with socket.create_connection(("127.0.0.1", port)) as conn:
    head = f"GET /users/7 HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nConnection: close\\r\\n\\r\\n"
    conn.sendall(head.encode())
    conn.shutdown(socket.SHUT_WR)
    time.sleep(0.5)
    answer = b""
    while chunk := conn.recv(65536):
        answer += chunk
print(answer.split(b"\\r\\n")[0].decode(), len(answer), flush=True)
"""


@pytest.mark.parametrize("probe_mode", PROBE_MODES)
def test_a_half_closing_client_whose_answer_is_read_after_its_socket_closed(
    receiver, server, start_agent, probe_mode
):
    """The client's socket reaches CLOSE (the server's FIN came) before the client reads the
    answer: the connection is not over for the agent until the client is done with it, so
    its one exchange is paired whole, request and response."""
    _proc, port = server
    client = Background([PYTHON, "-c", _HALF_CLOSING_CLIENT, str(port)], ready_line="waiting")
    try:
        start_agent(["--pid", str(client.pid)], agent_env(receiver, probe_mode=probe_mode))
        status_line, size = client.send("go").rsplit(" ", 1)
        assert status_line.endswith(" 200 OK")
        spans = receiver.wait_for_spans(lambda s: len(s) >= 1, timeout=15)
        receiver.wait_for_spans(lambda s: False, timeout=1.0)  # nothing else may arrive
        spans = receiver.spans()
    finally:
        client.stop()
    assert len(spans) == 1
    (span,) = spans
    assert span.kind == "CLIENT"
    assert span.attributes["url.full"] == f"http://127.0.0.1:{port}/users/7"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["server.port"] == port
    assert int(size) > 0
