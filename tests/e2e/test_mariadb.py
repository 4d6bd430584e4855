"""End to end: a real MariaDB server from the distribution and its own client, traced by the
real agent. Its binary protocol must be counted as unparsed, never taken for HTTP/2: a
query's 3-byte little-endian length reads as a plausible HTTP/2 DATA frame header, and a
connection taken for HTTP/2 makes the kernel copy up to 8 KiB of every call to user space."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import agent_env, require
from tests.e2e.harness import free_port, summary_counts, wait_for_port

QUERIES = "SELECT @@version_comment LIMIT 1; SELECT 1"
CLIENT_RUNS = 3


@pytest.fixture
def mariadb(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    require("mariadbd")
    data = tmp_path / "data"
    subprocess.run(
        [
            require("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=root",
            "--auth-root-authentication-method=normal", "--skip-test-db",
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [
            require("mariadbd"), "--no-defaults", f"--datadir={data}", "--user=root",
            f"--port={port}", "--bind-address=127.0.0.1", f"--socket={tmp_path / 'sock'}",
            "--skip-grant-tables",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=60)
        yield server, port
    finally:
        server.terminate()
        server.wait(60)
        shutil.rmtree(data, ignore_errors=True)


def test_a_database_protocol_is_not_taken_for_http2(receiver, mariadb, start_agent):
    server, port = mariadb
    agent = start_agent(["--pid", str(server.pid)], agent_env(receiver))
    for _ in range(CLIENT_RUNS):
        result = subprocess.run(
            [require("mariadb"), "-h", "127.0.0.1", "-P", str(port), "-u", "root", "-e", QUERIES],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert "Debian" in result.stdout
    assert agent.stop() == 0
    counts = summary_counts(agent)
    # every exchange of every connection (its login, two queries, its quit) is unparsed:
    # none was taken for HTTP/2 (before the fix, 9 of 12 were counted http2_joined)
    assert counts["spans"] == 0
    assert counts["exchanges"] >= 3 * CLIENT_RUNS
    assert counts.get("unparsed") == counts["exchanges"]
    assert "http2_joined" not in counts
    assert receiver.spans() == []
