"""h2load at a fixed request rate: its summary, and latency percentiles from its per-request log."""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.services import require

PER_CLIENT_RPS = 200  # one h2load client tops out near 250 req/s: stay under it

_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}
_FINISHED = re.compile(r"finished in (?P<secs>[0-9.]+)(?P<unit>us|ms|s), (?P<rps>[0-9.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (?P<total>\d+) total, (?P<started>\d+) started, (?P<done>\d+) done, "
    r"(?P<succeeded>\d+) succeeded, (?P<failed>\d+) failed, (?P<errored>\d+) errored, "
    r"(?P<timeout>\d+) timeout"
)
_TIME_FOR_REQUEST = re.compile(
    r"time for request:\s+(?P<min>[0-9.]+)(?P<min_u>us|ms|s)\s+(?P<max>[0-9.]+)(?P<max_u>us|ms|s)"
    r"\s+(?P<mean>[0-9.]+)(?P<mean_u>us|ms|s)\s+(?P<sd>[0-9.]+)(?P<sd_u>us|ms|s)"
)


@dataclass
class LoadResult:
    target_rps: int
    clients: int
    duration_s: float
    achieved_rps: float
    requests: int  # succeeded (2xx) responses
    failed: int
    min_us: float
    max_us: float
    mean_us: float
    sd_us: float
    p50_us: float | None
    p99_us: float | None
    p999_us: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def clients_for(rate: int) -> tuple[int, int]:
    """(clients, rps per client) giving `rate` requests/s in total."""
    clients = max(1, math.ceil(rate / PER_CLIENT_RPS))
    return clients, max(1, round(rate / clients))


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def parse_summary(text: str) -> dict[str, float]:
    finished = _FINISHED.search(text)
    requests = _REQUESTS.search(text)
    timing = _TIME_FOR_REQUEST.search(text)
    if not (finished and requests and timing):
        raise ValueError(f"cannot parse h2load's output:\n{text}")
    parsed: dict[str, float] = {
        "secs": float(finished["secs"]) * _UNITS[finished["unit"]] / 1e6,
        "rps": float(finished["rps"]),
        "succeeded": int(requests["succeeded"]),
        "failed": int(requests["failed"]) + int(requests["errored"]) + int(requests["timeout"]),
    }
    for key in ("min", "max", "mean", "sd"):
        parsed[key] = float(timing[key]) * _UNITS[timing[f"{key}_u"]]
    return parsed


def read_latencies(log_file: Path) -> list[float]:
    """Per-request microseconds from h2load's --log-file (start µs, status, µs to response end)."""
    values: list[float] = []
    for line in log_file.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1].startswith("2"):
            values.append(float(parts[2]))
    values.sort()
    return values


def run(
    url: str, rate: int, duration_s: float, log_file: Path, clients: int | None = None
) -> LoadResult:
    """h2load --h1 -c C --rps R -D duration URL, bounded in time (and so in count).

    With no `clients`, one client per 200 req/s. The subprocess is killed if h2load outlives
    its duration by a minute (it can, when a server closes every connection).
    """
    if clients is None:
        clients, per_client = clients_for(rate)
    else:
        per_client = max(1, round(rate / clients))
    argv = [
        require("h2load"),
        "--h1",
        "-c",
        str(clients),
        "-t",
        "1",
        "--rps",
        str(per_client),
        "-D",
        f"{round(duration_s * 1000)}ms",
        "--log-file",
        str(log_file),
        url,
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"h2load failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    summary = parse_summary(done.stdout)
    latencies = read_latencies(log_file)
    return LoadResult(
        target_rps=clients * per_client,
        clients=clients,
        duration_s=summary["secs"],
        achieved_rps=summary["rps"],
        requests=int(summary["succeeded"]),
        failed=int(summary["failed"]),
        min_us=summary["min"],
        max_us=summary["max"],
        mean_us=summary["mean"],
        sd_us=summary["sd"],
        p50_us=percentile(latencies, 0.50),
        p99_us=percentile(latencies, 0.99),
        p999_us=percentile(latencies, 0.999),
    )
