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
    assert any(row.startswith("| kernel memory of its BPF maps") for row in startup)
    tax = _table_rows(markdown, "## 4. The syscall tax")
    assert [row.split("|")[1].strip() for row in tax] == [
        "without the agent",
        "agent tracing another process",
        "agent tracing the loop",
    ]

    data = json.loads((out / "results.json").read_text())
    assert data["probe_mode"] in ("socket", "kprobe", "tracepoint")
    assert data["nginx"][0]["agent"]["load"]["requests"] > 0
    assert data["nginx"][0]["agent_summary"]["spans"] > 0
    # one round in the quick run: each side's medians are that round's run's figures
    row = data["nginx"][0]
    base, traced = row["base"], row["agent"]
    assert len(base["rounds"]) == len(traced["rounds"]) == 1
    assert base["target_cpu_us_per_req"] == base["rounds"][0]["target_cpu_us_per_req"]
    assert traced["spans"] == traced["rounds"][0]["spans"]
    assert set(row["ratio_spread"]) == {"nginx_cpu_per_req", "mean_latency"}
    assert all(s is None or s["n"] == 1 for s in row["ratio_spread"].values())
    assert "- 500 req/s, per-round ratios (1 round): nginx CPU " in markdown
    assert all(start["exit_code"] == 0 for start in data["agent_starts"])
    # the ring buffer alone is OTELBPF_RINGBUF_MB (8 MiB) of it
    assert all(start["bpf_maps_kib"] >= 8 << 10 for start in data["agent_starts"])
    # two starts compile (the run's first, and the start-up scenario's empty-cache one); every
    # other start loads the compiled programs from the run's cache
    compiled = [start["compile"] for start in data["agent_starts"] if start["compile"]]
    assert len(compiled) == 2 < len(data["agent_starts"])
    assert all(c["compile_s"] > 0 and c["peak_mib"] > 0 for c in compiled)
    # the syscall tax: the loop's 1,000 unmeasured and 2,000 measured requests, each one
    # exchange on its client side and one on its server side; none for the untraced variant
    variants = data["tax"]["variants"]
    assert [run["requests"] for run in variants["none"]["rounds"]] == [2000]
    traced = variants["traced"]["agent_summary"]
    assert traced["exchanges"] + traced.get("ring-buffer drops", 0) == 2 * (1000 + 2000)
    assert variants["untraced"]["agent_summary"]["exchanges"] == 0
    assert 7 <= data["tax"]["syscalls_per_req"] <= 9  # the client's read may take two
    assert all(v["cpu_ns_per_req"] > 0 for v in variants.values())


def _fake_run(cpu: float, mean: float, spans: int, **agent: object) -> dict:
    """A measured run as Bench._measure (and, with the agent, Bench._nginx_agent) leaves it."""
    load = {"achieved_rps": 500.0, "mean_us": mean, "p50_us": mean, "p99_us": mean * 3}
    load = {**load, "p999_us": None, "requests": 1000, "failed": 0}
    return {"load": load, "target_cpu_us_per_req": cpu, "spans": spans, **agent}


def _fake_agent_run(cpu: float, mean: float, spans: int, **more: object) -> dict:
    agent = {
        "agent_cpu_us_per_req": 10.0,
        "agent_alive": True,
        "agent_idle_cpu_percent": None,
        "agent_summary": {"spans": spans},
        "agent_exit_code": 0,
        "agent_stop_s": 3.0,
        "agent_rss_after_kib": 70_000,
        "agent_hwm_kib": 72_000,
    }
    return _fake_run(cpu, mean, spans, **{**agent, **more})


def _fake_rounds() -> tuple[list[dict], list[dict]]:
    """Three rounds whose own ratios are nginx CPU 1.1, 1.2, 1.05 and mean latency 1.1, 1.2,
    1.1; the medians (24 -> 25.2 us, 900 -> 990 us) are ×1.05 and ×1.1."""
    base = [_fake_run(20.0, 800.0, 0), _fake_run(30.0, 1000.0, 0), _fake_run(24.0, 900.0, 0)]
    agent = [
        _fake_agent_run(22.0, 880.0, 1000, agent_idle_cpu_percent=0.4, agent_stop_s=3.2),
        _fake_agent_run(36.0, 1200.0, 999, agent_exit_code=3, agent_cpu_us_per_req=14.0),
        _fake_agent_run(25.2, 990.0, 998, agent_rss_after_kib=71_000, agent_hwm_kib=75_000),
    ]
    agent[2]["agent_summary"] = {"spans": 998, "ring-buffer drops": 5}
    return base, agent


def test_nginx_row_is_the_medians_of_the_rounds_and_the_spread_of_their_ratios() -> None:
    from bench.scenarios import _nginx_row

    base_runs, agent_runs = _fake_rounds()
    row = _nginx_row(4000, base_runs, agent_runs)
    base, traced = row["base"], row["agent"]
    assert base["target_cpu_us_per_req"] == 24.0 and traced["target_cpu_us_per_req"] == 25.2
    assert base["load"]["mean_us"] == 900.0 and traced["load"]["mean_us"] == 990.0
    assert traced["load"]["p99_us"] == 2970.0
    assert traced["load"]["p999_us"] is None  # no run has it
    assert traced["agent_cpu_us_per_req"] == 10.0  # 10, 14, 10
    assert traced["load"]["requests"] == 3000 and traced["spans"] == 2997
    assert traced["span_completeness"] == 2997 / 3000
    assert traced["rounds"] == agent_runs and base["rounds"] == base_runs
    assert row["ratios"]["nginx_cpu_per_req"] == pytest.approx(1.05)
    assert row["ratios"]["mean_latency"] == pytest.approx(1.1)
    assert row["ratios"]["total_cpu_per_req"] == pytest.approx((25.2 + 10.0) / 24.0)
    cpu, latency = row["ratio_spread"]["nginx_cpu_per_req"], row["ratio_spread"]["mean_latency"]
    assert (cpu["min"], cpu["median"], cpu["max"], cpu["n"]) == pytest.approx((1.05, 1.1, 1.2, 3))
    assert (latency["min"], latency["max"], latency["n"]) == pytest.approx((1.1, 1.2, 3))
    # the agent: idle CPU from the first round, RSS from the last, the peak of all, and the
    # exit summaries added up (a drop in any round shows)
    assert row["agent_idle_cpu_percent"] == 0.4
    assert row["agent_rss_after_kib"] == 71_000 and row["agent_hwm_kib"] == 75_000
    assert row["agent_summary"] == {"spans": 2997, "ring-buffer drops": 5}
    assert row["agent_exit_code"] == 3 and row["agent_stop_s"] == 3.0


def test_median_run_of_an_even_number_of_rounds_takes_the_middle_two() -> None:
    from bench.scenarios import _median_run

    runs = [_fake_run(20.0, 800.0, 0), _fake_run(30.0, 1000.0, 0)]
    runs[1]["load"]["mean_us"] = None  # a figure a run lacks is left out of the median
    row = _median_run("base", runs)
    assert row["target_cpu_us_per_req"] == 25.0 and row["load"]["p99_us"] == 2700.0
    assert row["load"]["mean_us"] == 800.0
    assert row["load"]["requests"] == 2000 and row["span_completeness"] == 0.0
    assert "agent_cpu_us_per_req" not in row  # no run has it


def test_failures_look_at_every_round_and_the_report_gives_the_spread() -> None:
    from bench.report import _ratio_spread_line
    from bench.scenarios import Results, _nginx_row, failures

    base_runs, agent_runs = _fake_rounds()
    agent_runs[1]["agent_alive"] = False
    agent_runs[0]["agent_summary"] = {}
    row = _nginx_row(4000, base_runs, agent_runs)
    starts = [{"scenario": f"nginx 4000 round {n}", "exit_code": c} for n, c in ((1, 0), (2, 3))]
    found = failures(Results(nginx=[row], agent_starts=starts))
    assert found == [
        "nginx 4000 round 2: the agent exited 3",
        "nginx 4000 round 1: the agent printed no exit summary",
        "nginx 4000 round 2: the agent died during the run",
    ]
    assert _ratio_spread_line(row) == (
        "- 4,000 req/s, per-round ratios (3 rounds): nginx CPU ×1.05–×1.20, "
        "mean latency ×1.10–×1.20"
    )


def _fake_tax_run(cpu: float, exchanges: int | None = None) -> dict:
    """A run as SyscallTax._run leaves it."""
    run = {"requests": 1000, "syscalls_per_req": 8.0, "cpu_ns_per_req": cpu, "wall_ns_per_req": cpu}
    if exchanges is not None:
        run["agent_summary"] = {"exchanges": exchanges, "spans": exchanges}
    return run


def test_tax_row_takes_medians_and_pairs_each_round_with_its_own_baseline() -> None:
    from bench.scenarios import Results, _tax_row, failures

    runs = {
        "none": [_fake_tax_run(20_000.0), _fake_tax_run(24_000.0), _fake_tax_run(22_000.0)],
        "untraced": [
            _fake_tax_run(21_000.0, 0),
            _fake_tax_run(26_400.0, 0),
            _fake_tax_run(23_100.0, 0),
        ],
        "traced": [
            _fake_tax_run(24_000.0, 4000),
            _fake_tax_run(26_400.0, 3990),
            _fake_tax_run(27_500.0),
        ],
    }
    row = _tax_row(runs)
    untraced, traced = row["variants"]["untraced"], row["variants"]["traced"]
    assert row["syscalls_per_req"] == 8.0
    assert untraced["cpu_ns_per_req"] == 23_100.0 and untraced["ratio"] == pytest.approx(1.05)
    assert untraced["added_ns_per_syscall"] == pytest.approx(1_100.0 / 8)
    # per round: 1.05, 1.10, 1.05 untraced; 1.20, 1.10, 1.25 traced
    spread = untraced["ratio_spread"]
    assert (spread["min"], spread["median"], spread["max"]) == pytest.approx((1.05, 1.05, 1.1))
    assert (traced["ratio_spread"]["min"], traced["ratio_spread"]["max"]) == pytest.approx(
        (1.1, 1.25)
    )
    assert row["variants"]["none"]["ratio_spread"] is None
    assert traced["agent_summary"] == {"exchanges": 7990, "spans": 7990}
    assert traced["requests"] == 3000
    # the second traced round paired 10 exchanges short of 2 x (1,000 + 1,000); the third
    # printed no exit summary
    assert failures(Results(tax=row)) == [
        "tax traced round 2: 3990 exchanges paired in the kernel, not 4000",
        "tax traced round 3: the agent printed no exit summary",
    ]
