"""Smoke test of the benchmark suite: `python -m bench --quick` runs and reports every scenario.

No timing thresholds: the loads are tiny and the machine is shared. It needs what the suite
needs (root, bcc, nginx, h2load, the bench extras) and skips when they are missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _missing() -> list[str]:
    missing = [p for p in ("nginx", "h2load") if shutil.which(p, path="/usr/sbin:/usr/bin") is None]
    missing += [
        m
        for m in ("flask", "waitress", "matplotlib", "opentelemetry.instrumentation.flask", "grpc")
        if importlib.util.find_spec(m) is None
    ]
    return missing


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the agent loads eBPF programs: needs root"),
    pytest.mark.skipif(bool(_missing()), reason=f"bench needs {_missing()}"),
]


def _table_rows(markdown: str, heading: str) -> list[str]:
    """The data rows of the first table after `heading`."""
    section = markdown.split(heading, 1)[1]
    table: list[str] = []
    for line in section.splitlines():
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return table[2:]  # past the header and the |---| line


def test_quick_run_writes_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # exit 1 also means an agent died or exited non-zero: the log says which
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    for name in ("results.md", "results.json", "results.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    markdown = (out / "results.md").read_text()
    assert "cores" in markdown and "probe mode" in markdown
    nginx = _table_rows(markdown, "## 1. nginx")
    python = _table_rows(markdown, "## 2. A Python web app")
    startup = _table_rows(markdown, "## 3. Start-up and memory")
    assert len(nginx) == 1 and nginx[0].startswith("| 500 ")
    assert [row.split("|")[1].strip() for row in python] == [
        "bare",
        "otelbpf",
        "opentelemetry-instrumentation-flask",
    ]
    assert any("tracing" in row for row in startup)

    data = json.loads((out / "results.json").read_text())
    assert data["probe_mode"] in ("kprobe", "tracepoint")
    assert data["nginx"][0]["agent"]["load"]["requests"] > 0
    assert data["nginx"][0]["agent_summary"]["spans"] > 0
    # the baseline was measured before and after the agent's run, and averaged
    base = data["nginx"][0]["base"]
    assert len(base["runs"]) == 2
    assert base["target_cpu_us_per_req"] == pytest.approx(
        sum(run["target_cpu_us_per_req"] for run in base["runs"]) / 2
    )
    assert all(start["exit_code"] == 0 for start in data["agent_starts"])
    # two starts compile (the run's first, and the start-up scenario's empty-cache one); every
    # other start loads the compiled programs from the run's cache
    compiled = [start["compile"] for start in data["agent_starts"] if start["compile"]]
    assert len(compiled) == 2 < len(data["agent_starts"])
    assert all(c["compile_s"] > 0 and c["peak_mib"] > 0 for c in compiled)


def test_bracketed_base_averages_the_runs_the_ratios_use() -> None:
    from bench.scenarios import bracketed_base

    def run(cpu: float, mean: float, p99: float | None) -> dict:
        load = {"achieved_rps": 1000.0, "mean_us": mean, "p50_us": mean, "p99_us": p99}
        load = {**load, "p999_us": p99, "requests": 7}
        return {"load": load, "target_cpu_us_per_req": cpu, "target_cpu_s": cpu * 7e-6}

    before, after = run(20.0, 800.0, 1200.0), run(24.0, 900.0, None)
    merged = bracketed_base([before, after])
    assert merged["target_cpu_us_per_req"] == 22.0
    assert merged["target_cpu_s"] == pytest.approx(22.0 * 7e-6)
    assert merged["window_s"] is None  # not in these runs
    assert merged["load"]["mean_us"] == 850.0
    assert merged["load"]["p99_us"] is None  # a run without the figure: no average
    assert merged["load"]["requests"] == 7  # counts are the first run's
    assert merged["runs"] == [before, after]
    assert before["load"]["mean_us"] == 800.0  # the runs themselves are left as they were
