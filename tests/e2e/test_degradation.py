"""End to end: the agent degrades on purpose. Overloaded, with its collector down or sampling,
it drops and counts, the traced process is served as before, and every request is accounted
for: as a span, or in a count the agent reports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from tests.e2e.conftest import agent_env, require
from tests.e2e.harness import (
    curl,
    free_port,
    python_client,
    server_requests_counted,
    summary_counts,
)
from tests.e2e.test_http_nginx import Nginx

# The memory target: the agent's peak RSS under load stays below it.
PEAK_RSS_LIMIT_KIB = 150 * 1000


def _peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, status
    return int(match[1])


def test_a_reader_that_stops_costs_counted_drops_and_no_request(receiver, start_agent, tmp_path):
    """The agent stopped (SIGSTOP) while nginx serves 20,000 requests: the kernel fills the
    1 MiB ring, then drops and counts. Every request is served, and every request (and the one
    before) is either an exchange the agent read or a counted drop."""
    requests = 20_000
    nginx = Nginx(tmp_path)
    nginx.start()
    try:
        (worker,) = nginx.worker_pids()
        agent = start_agent(["--pid", str(worker), "--ringbuf-mb", "1"], agent_env(receiver))
        # one request first, exported with a metric: both export channels are connected, so
        # no connect of the agent's own (a kernel notice) can meet the full ring later
        assert curl(f"http://127.0.0.1:{nginx.port}/index.html").stdout == "200"
        receiver.wait_for_spans(1, timeout=15)
        receiver.wait_for_metrics(1, timeout=15)
        os.kill(agent.process.pid, signal.SIGSTOP)
        try:
            load = subprocess.run(
                [
                    require("h2load"), "--h1", "-n", str(requests), "-c", "10", "-t", "1",
                    f"http://127.0.0.1:{nginx.port}/index.html",
                ],
                capture_output=True, text=True, timeout=120, check=True,
            )  # fmt: skip
        finally:
            os.kill(agent.process.pid, signal.SIGCONT)
        assert f"{requests} succeeded, 0 failed" in load.stdout, load.stdout
        peak_kib = _peak_rss_kib(agent.process.pid)
        # stopped before nginx: the worker's exit is not an event of this count
        assert agent.stop() == 0, agent.stderr
    finally:
        nginx.stop()
    assert "Traceback" not in agent.stderr

    counts = summary_counts(agent)
    drops = counts["ring-buffer drops"]
    assert drops > 0, agent.stderr  # the ring did fill: the test tested the overload
    assert counts["exchanges"] + drops == requests + 1, counts
    assert counts["spans"] == counts["exchanges"], counts
    not_sent = counts.get("spans dropped (export queue full)", 0) + counts.get(
        "spans not delivered (export failed)", 0
    )
    received = [s for s in receiver.spans() if s.resource.get("process.pid") == worker]
    assert len(received) == counts["spans"] - not_sent, counts
    assert {s.name for s in received} == {"GET /index.html"}
    assert peak_kib < PEAK_RSS_LIMIT_KIB


def test_a_collector_that_is_down_costs_counted_spans_and_no_request(server, start_agent):
    """Nothing listens at the endpoint: each export fails (after the exporter's 1 s timeout),
    the agent says so, keeps tracing and exits cleanly; the server answers every request."""
    proc, port = server
    requests = 20
    down = f"http://127.0.0.1:{free_port()}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": down,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",  # ms: 1 s
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    agent = start_agent(["--pid", str(proc.pid)], env)

    # the client exits non-zero on any failed request (check=True)
    python_client("keepalive", "127.0.0.1", port, "/users/1", requests)
    assert agent.process.poll() is None, agent.stderr  # still tracing
    python_client("keepalive", "127.0.0.1", port, "/users/2", requests)

    assert agent.stop() == 0, agent.stderr
    assert "Traceback" not in agent.stderr
    counts = summary_counts(agent)
    assert counts["spans"] == 2 * requests, counts
    assert counts["spans not delivered (export failed)"] == 2 * requests, counts
    assert counts["ring-buffer drops"] == 0


def test_sampled_out_requests_still_count_in_the_metrics(receiver, server, start_agent):
    """OTEL_TRACES_SAMPLER=always_off: no span is exported, and the request-duration
    histogram counts every request."""
    proc, port = server
    requests = 30
    env = {**agent_env(receiver), "OTEL_TRACES_SAMPLER": "always_off"}
    agent = start_agent(["--pid", str(proc.pid)], env)

    python_client("keepalive", "127.0.0.1", port, "/users/1", requests)

    receiver.wait_for_metrics(lambda pts: server_requests_counted(pts, proc.pid) >= requests, 15)
    assert agent.stop() == 0, agent.stderr
    assert server_requests_counted(receiver.metrics(), proc.pid) == requests
    assert receiver.spans() == []
    assert summary_counts(agent)["spans"] == requests  # described, then not sampled


def test_ratio_sampling_keeps_the_spans_whose_trace_id_is_under_the_ratio(
    receiver, server, start_agent
):
    """OTEL_TRACES_SAMPLER=traceidratio with 0.25: the spans exported are those whose trace
    id's low 64 bits fall under a quarter of their range (the specification's rule), and the
    metrics still count every request."""
    proc, port = server
    requests = 200
    env = {
        **agent_env(receiver),
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    agent = start_agent(["--pid", str(proc.pid)], env)

    python_client("keepalive", "127.0.0.1", port, "/users/1", requests)

    receiver.wait_for_metrics(lambda pts: server_requests_counted(pts, proc.pid) >= requests, 15)
    assert agent.stop() == 0, agent.stderr
    assert server_requests_counted(receiver.metrics(), proc.pid) == requests
    spans = [s for s in receiver.spans() if s.resource.get("process.pid") == proc.pid]
    bound = round(0.25 * 2**64)
    assert all(int(s.trace_id, 16) & (2**64 - 1) < bound for s in spans)
    # 200 draws at a quarter: fewer than 20 or more than 80 has odds below one in 10^5
    assert 20 <= len(spans) <= 80, len(spans)
