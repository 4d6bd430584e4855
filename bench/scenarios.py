"""The three scenarios. Each measures the workload without and with the agent in ONE run.

1. nginx: a traced nginx at fixed request rates (h2load), without and with the agent, in
   alternating rounds.
2. python: a small Flask app, bare, traced by otelbpf, and instrumented in-process by
   OpenTelemetry's Flask instrumentation, all exporting to the same receiver.
3. startup: process start to "tracing", and the agent's memory.
4. tax: what the agent adds to the system calls of a process it traces and of one it does
   not (every other process on a host): a C loop making nginx's calls, in alternating rounds.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import load
from bench.procs import CpuWindow, cpu_seconds
from bench.services import AgentRun, Nginx, PythonApp, Receiver, RequestLoop

log = logging.getLogger("bench")


@dataclass(frozen=True)
class Settings:
    quick: bool
    nginx_rates: tuple[int, ...]
    nginx_duration_s: float  # per run; each round runs base and agent once, in turn
    nginx_rounds: int  # every other round in reverse order: B A A B B A A B
    warmup_s: float
    app_rate: int
    app_clients: int
    app_duration_s: float
    app_rounds: int  # each round runs every variant once; odd rounds in reverse order
    startup_samples: int
    idle_sample_s: float
    tax_requests: int  # per run of the request loop
    tax_rounds: int  # each round runs every variant once; odd rounds in reverse order

    @classmethod
    def full(cls) -> Settings:
        return cls(
            quick=False,
            nginx_rates=(1000, 4000, 10000),
            nginx_duration_s=15,
            nginx_rounds=4,
            warmup_s=2,
            app_rate=300,
            app_clients=4,
            app_duration_s=10,
            app_rounds=4,
            startup_samples=3,
            idle_sample_s=3,
            tax_requests=50000,
            tax_rounds=8,
        )

    @classmethod
    def smoke(cls) -> Settings:
        return cls(
            quick=True,
            nginx_rates=(500,),
            nginx_duration_s=2,
            nginx_rounds=1,
            warmup_s=0.5,
            app_rate=100,
            app_clients=2,
            app_duration_s=2,
            app_rounds=1,
            startup_samples=1,
            idle_sample_s=0,
            tax_requests=2000,
            tax_rounds=1,
        )


@dataclass
class Results:
    nginx: list[dict] = field(default_factory=list)
    python: list[dict] = field(default_factory=list)
    startup: dict = field(default_factory=dict)
    tax: dict = field(default_factory=dict)
    agent_starts: list[dict] = field(default_factory=list)  # every agent start of the run
    probe_mode: str | None = None


def _per_request_us(cpu_s: float, requests: int) -> float | None:
    return cpu_s * 1e6 / requests if requests else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


class Bench:
    def __init__(self, settings: Settings, work_dir: Path) -> None:
        self.settings = settings
        self.work = work_dir
        self.results = Results()
        self._starts = 0

    # ------------------------------------------------------------------ helpers

    def _agent(
        self, pid: int, receiver: Receiver, name: str, cache_dir: Path | None = None
    ) -> AgentRun:
        """An agent start; compiled programs are cached for this run only (its first start,
        or one given an empty cache_dir, compiles)."""
        self._starts += 1
        agent = AgentRun(pid, receiver.grpc_endpoint, self.work, f"{self._starts:02d}-{name}")
        agent.cache_dir = cache_dir or self.work / "program-cache"
        agent.start()
        self.results.probe_mode = self.results.probe_mode or agent.probe_mode
        log.info("  agent %s started in %.2fs (pid %d)", name, agent.startup_s, agent.pid)
        return agent

    def _record_start(self, agent: AgentRun, scenario: str, memory: dict | None = None) -> dict:
        entry = {
            "scenario": scenario,
            "startup_s": agent.startup_s,
            "self_reported_startup_s": agent.self_reported_startup_s,
            "stop_s": agent.stop_s,
            "exit_code": agent.returncode,
            "rss_after_start_kib": agent.rss_after_start_kib,
            "compile": agent.compile,
            **(memory or {}),
        }
        self.results.agent_starts.append(entry)
        return entry

    def _warm(self, url: str, rate: int, receiver: Receiver, path: str, name: str) -> None:
        """A short unmeasured run at the same rate; its spans are let through first."""
        if self.settings.warmup_s <= 0:
            return
        result = load.run(url, rate, self.settings.warmup_s, self.work / f"warm-{name}.log")
        receiver.settle(path, result.requests, quiet_s=0.6, timeout=10)
        receiver.clear()

    def _measure(
        self,
        url: str,
        rate: int,
        duration: float,
        name: str,
        target_pid: int,
        tree: bool,
        agent: AgentRun | None,
        receiver: Receiver,
        path: str,
        clients: int | None = None,
    ) -> dict:
        """One measured run: load, CPU of the target (and agent), latency, spans exported."""
        target = CpuWindow({"target": target_pid}, tree=tree).start()
        others = {"receiver": receiver.pid}
        if agent is not None:
            others["agent"] = agent.pid
        side = CpuWindow(others).start()
        started = time.monotonic()
        result = load.run(url, rate, duration, self.work / f"{name}.log", clients=clients)
        target_cpu = target.stop()["target"]
        # spans still in flight (idle flush, batch delay) belong to this run, and so does the
        # agent's CPU until they are out
        spans = receiver.settle(path, result.requests, quiet_s=1.0, timeout=15)
        side_cpu = side.stop()
        elapsed = time.monotonic() - started
        row = {
            "load": result.as_dict(),
            "target_cpu_s": target_cpu,
            "target_cpu_us_per_req": _per_request_us(target_cpu, result.requests),
            "receiver_cpu_s": side_cpu["receiver"],
            "window_s": elapsed,
            "spans": spans,
            "span_completeness": spans / result.requests if result.requests else None,
        }
        if agent is not None:
            row["agent_alive"] = agent.process.poll() is None
            if not row["agent_alive"]:
                log.warning("  the agent died during the run:\n%s", agent.stderr[-3000:])
            row["agent_cpu_s"] = side_cpu["agent"]
            row["agent_cpu_us_per_req"] = _per_request_us(side_cpu["agent"], result.requests)
            row["agent_memory"] = agent.memory()
        return row

    def _idle_cpu_percent(self, agent: AgentRun) -> float | None:
        seconds = self.settings.idle_sample_s
        if seconds <= 0:
            return None
        before = cpu_seconds(agent.pid)
        time.sleep(seconds)
        return (cpu_seconds(agent.pid) - before) / seconds * 100

    # ------------------------------------------------------------------ scenario 1

    NGINX_VARIANTS = ("base", "agent")

    def nginx(self, receiver: Receiver) -> None:
        rates = self.settings.nginx_rates
        paths = [f"/{kind}-{rate}.html" for rate in rates for kind in ("base", "agent", "warm")]
        server = Nginx(self.work / "nginx", paths)
        try:
            for rate in rates:
                self._nginx_rate(server, receiver, rate)
        finally:
            server.stop()

    def _nginx_rate(self, server: Nginx, receiver: Receiver, rate: int) -> None:
        """Without and with the agent once per round, every other round in reverse order (four
        rounds run B A A B B A A B), and each side's medians compared: a drift of the machine's
        speed along the rounds weighs the same on both sides. This VM's speed drifts by a tenth
        from minute to minute: one run with the agent against the two without it around it gave
        ratios that moved as much between two runs of the same code (nginx CPU ×1.06, ×1.20)."""
        rounds = self.settings.nginx_rounds
        runs: dict[str, list[dict]] = {variant: [] for variant in self.NGINX_VARIANTS}
        for number in range(1, rounds + 1):
            for variant in _in_round_order(self.NGINX_VARIANTS, number - 1):
                log.info(
                    "nginx at %d req/s for %gs, round %d/%d: %s",
                    rate, self.settings.nginx_duration_s, number, rounds,
                    "with the agent" if variant == "agent" else "without the agent",
                )  # fmt: skip
                measure = self._nginx_agent if variant == "agent" else self._nginx_base
                runs[variant].append(measure(server, receiver, rate, number))
        row = _nginx_row(rate, runs["base"], runs["agent"])
        self.results.nginx.append(row)
        base, traced, spread = row["base"], row["agent"], row["ratio_spread"]
        log.info(
            "  %d req/s, medians of %d rounds: %d/%d spans, agent %.0f us/req, "
            "nginx %.1f -> %.1f us/req (x%.2f, rounds x%.2f-x%.2f), p99 %.2f -> %.2f ms, %s",
            rate,
            rounds,
            traced["spans"],
            traced["load"]["requests"],
            traced["agent_cpu_us_per_req"] or 0,
            base["target_cpu_us_per_req"] or 0,
            traced["target_cpu_us_per_req"] or 0,
            row["ratios"]["nginx_cpu_per_req"] or 0,
            (spread["nginx_cpu_per_req"] or {}).get("min", 0),
            (spread["nginx_cpu_per_req"] or {}).get("max", 0),
            (base["load"]["p99_us"] or 0) / 1000,
            (traced["load"]["p99_us"] or 0) / 1000,
            row["agent_summary"],
        )

    def _nginx_run(
        self, server: Nginx, receiver: Receiver, rate: int, variant: str, number: int,
        agent: AgentRun | None,
    ) -> dict:  # fmt: skip
        """One round's measured run of a variant ("base", "agent"), after its own warm-up; its
        requests go to /VARIANT-RATE.html, so that spans are counted by path."""
        name = f"nginx-{rate}-{variant}-r{number}"
        warm = f"/warm-{rate}.html"
        self._warm(server.url(warm), rate, receiver, warm, name)
        path = f"/{variant}-{rate}.html"
        return self._measure(
            server.url(path), rate, self.settings.nginx_duration_s, name,
            server.pid, True, agent, receiver, path,
        )  # fmt: skip

    def _nginx_base(self, server: Nginx, receiver: Receiver, rate: int, number: int) -> dict:
        """One round's run without the agent."""
        run = self._nginx_run(server, receiver, rate, "base", number, None)
        receiver.clear()
        log.info(
            "  round %d without: nginx %.1f us/req, mean %.2f ms",
            number,
            run["target_cpu_us_per_req"] or 0,
            run["load"]["mean_us"] / 1000,
        )
        return run

    def _nginx_agent(self, server: Nginx, receiver: Receiver, rate: int, number: int) -> dict:
        """One round's run with an agent started for it and stopped after it, so every round
        pays for a start the same way and one bad start shows as one bad round. The agent's idle
        CPU is sampled in the first round only: it does not depend on the rate or the round."""
        agent = self._agent(server.pid, receiver, f"nginx-{rate}-r{number}")
        try:
            idle = self._idle_cpu_percent(agent) if number == 1 else None
            run = self._nginx_run(server, receiver, rate, "agent", number, agent)
            memory = agent.memory()
        finally:
            agent.stop()
        # the agent flushes every pending exchange when it stops: count again
        served = run["load"]["requests"]
        run["spans"] = receiver.settle(f"/agent-{rate}.html", served, quiet_s=0.5, timeout=5)
        run["span_completeness"] = run["spans"] / served if served else None
        receiver.clear()
        run.update(
            agent_idle_cpu_percent=idle,
            agent_summary=agent.summary(),
            agent_exit_code=agent.returncode,
            agent_stop_s=agent.stop_s,
            agent_rss_after_kib=memory["rss_kib"],
            agent_hwm_kib=memory["hwm_kib"],
            agent_bpf_maps_kib=memory["bpf_maps_kib"],
        )
        self._record_start(agent, f"nginx {rate} round {number}", memory)
        log.info(
            "  round %d with: %d/%d spans, nginx %.1f us/req, agent %.0f us/req, mean %.2f ms",
            number,
            run["spans"],
            served,
            run["target_cpu_us_per_req"] or 0,
            run["agent_cpu_us_per_req"] or 0,
            run["load"]["mean_us"] / 1000,
        )
        return run

    # ------------------------------------------------------------------ scenario 2

    PYTHON_VARIANTS = ("bare", "otelbpf", "opentelemetry-instrumentation-flask")

    def python(self, receiver: Receiver) -> None:
        """Every variant once per round, every other round in reverse order: four rounds run
        A B C C B A A B C C B A, so a drift of the machine's speed along the run weighs the
        same on every variant's median. This shared VM slows by half within a few minutes at
        times: a single run of each, one after the other, measured that drift as much as the
        agent."""
        variants = self.PYTHON_VARIANTS
        runs: dict[str, list[dict]] = {variant: [] for variant in variants}
        for round_number in range(self.settings.app_rounds):
            for variant in _in_round_order(variants, round_number):
                runs[variant].append(self._python_variant(receiver, variant))
        for variant in variants:
            self.results.python.append(_median_run(variant, runs[variant]))
        bare = self.results.python[0]
        for row in self.results.python:
            row["ratios"] = {
                "mean_latency": _ratio(row["load"]["mean_us"], bare["load"]["mean_us"]),
                "p99_latency": _ratio(row["load"]["p99_us"], bare["load"]["p99_us"]),
                "app_cpu_per_req": _ratio(
                    row["target_cpu_us_per_req"], bare["target_cpu_us_per_req"]
                ),
                "total_cpu_per_req": _ratio(
                    row["total_cpu_us_per_req"], bare["target_cpu_us_per_req"]
                ),
            }

    def _python_variant(self, receiver: Receiver, variant: str) -> dict:
        settings = self.settings
        rate, clients = settings.app_rate, settings.app_clients
        in_process = variant == "opentelemetry-instrumentation-flask"
        log.info("flask app at %d req/s for %gs: %s", rate, settings.app_duration_s, variant)
        app = PythonApp(
            "otel" if in_process else "bare",
            receiver.grpc_endpoint if in_process else None,
            self.work,
        )
        agent: AgentRun | None = None
        path = "/api/items/7"
        try:
            if variant == "otelbpf":
                agent = self._agent(app.pid, receiver, "flask")
            if settings.warmup_s > 0:
                load.run(
                    app.url("/api/items/3"), rate, settings.warmup_s,
                    self.work / f"warm-flask-{variant}.log", clients=clients,
                )  # fmt: skip
                receiver.settle("/api/items/3", 10**9, quiet_s=0.6, timeout=10)
                receiver.clear()
            row = self._measure(
                app.url(path), rate, settings.app_duration_s, f"flask-{variant}",
                app.pid, False, agent, receiver, path, clients=clients,
            )  # fmt: skip
        finally:
            if agent is not None:
                row_memory = agent.memory()
                agent.stop()
            app.stop()
        # both exporters flush what they still hold when they stop: count again
        row["spans"] = receiver.settle(path, row["load"]["requests"], quiet_s=0.5, timeout=5)
        requests = row["load"]["requests"]
        row["span_completeness"] = row["spans"] / requests if requests else None
        receiver.clear()
        row["variant"] = variant
        row["total_cpu_us_per_req"] = (row["target_cpu_us_per_req"] or 0) + (
            row.get("agent_cpu_us_per_req") or 0
        )
        if agent is not None:
            row["agent_summary"] = agent.summary()
            row["agent_exit_code"] = agent.returncode
            self._record_start(agent, "flask", row_memory)
        log.info(
            "  %s: app %.0f us/req, total %.0f us/req, mean %.2f ms, p99 %.2f ms, spans %d/%d",
            variant,
            row["target_cpu_us_per_req"] or 0,
            row["total_cpu_us_per_req"],
            row["load"]["mean_us"] / 1000,
            (row["load"]["p99_us"] or 0) / 1000,
            row["spans"],
            row["load"]["requests"],
        )
        return row

    # ------------------------------------------------------------------ scenario 4

    def syscall_tax(self, receiver: Receiver) -> None:
        self.results.tax = SyscallTax(self, receiver).run()

    # ------------------------------------------------------------------ scenario 3

    def startup(self, receiver: Receiver) -> None:
        """Agent starts on an idle nginx, plus every start of the other scenarios."""
        server = Nginx(self.work / "nginx-startup", ["/index.html"])
        try:
            # the first start compiles (an empty cache, as on a new machine); the rest do not
            for sample in range(self.settings.startup_samples + 1):
                cold = self.work / "program-cache-cold" if sample == 0 else None
                agent = self._agent(server.pid, receiver, "startup", cold)
                try:
                    memory = agent.memory()
                finally:
                    agent.stop()
                self._record_start(agent, "startup (idle nginx)", memory)
        finally:
            server.stop()
            receiver.clear()
        starts = self.results.agent_starts
        cached = [s for s in starts if not s["compile"]]
        compiling = [s for s in starts if s["compile"]]
        times = [s["startup_s"] for s in cached if s["startup_s"] is not None]
        cold_times = [s["startup_s"] for s in compiling if s["startup_s"] is not None]
        own = [s["self_reported_startup_s"] for s in cached if s["self_reported_startup_s"]]
        stops = [s["stop_s"] for s in starts if s["stop_s"] is not None]
        idle_rss = [s["rss_after_start_kib"] for s in starts if s["rss_after_start_kib"]]
        bpf_maps = [s["bpf_maps_kib"] for s in starts if s.get("bpf_maps_kib")]
        loaded = [r for r in self.results.nginx if r.get("agent_rss_after_kib")]
        heaviest = max(loaded, key=lambda r: r["rate"]) if loaded else None
        self.results.startup = {
            "samples": len(times),
            "startup_s": _spread(times),
            "self_reported_startup_s": _spread(own),
            "compiling_startup_s": _spread(cold_times),
            "compile_s": _spread([s["compile"]["compile_s"] for s in compiling]),
            "compile_peak_kib": _spread([s["compile"]["peak_mib"] << 10 for s in compiling]),
            "stop_s": _spread(stops),
            "rss_idle_kib": _spread(idle_rss),
            "rss_after_load_kib": {
                str(r["rate"]): r["agent_rss_after_kib"] for r in self.results.nginx
            },
            "hwm_kib": {str(r["rate"]): r["agent_hwm_kib"] for r in self.results.nginx},
            "bpf_maps_kib": _spread(bpf_maps),
            "heaviest_rate": heaviest["rate"] if heaviest else None,
            "exit_codes": sorted({s["exit_code"] for s in starts}, key=str),
        }


# the syscall-tax variants: no agent, an agent tracing only a sleeping process, an agent
# tracing the loop itself
TAX_VARIANTS = ("none", "untraced", "traced")
TAX_WARMUP = 1000  # the request loop's unmeasured requests (WARMUP in request_loop.c)


class SyscallTax:
    """Scenario 4: the request loop's CPU per request without the agent, with the agent
    tracing another process (what each untraced process on the host pays: the syscall
    tracepoints slow every system call of every task, hooked or not), and with the agent
    tracing the loop (its client and server side: two exchanges a request)."""

    def __init__(self, bench: Bench, receiver: Receiver) -> None:
        self.bench = bench
        self.receiver = receiver
        self.loop = RequestLoop(bench.work)
        self.cpu = max(os.sched_getaffinity(0))

    def run(self) -> dict:
        settings = self.bench.settings
        sleeper = subprocess.Popen(["sleep", "infinity"])
        runs: dict[str, list[dict]] = {variant: [] for variant in TAX_VARIANTS}
        try:
            for number in range(settings.tax_rounds):
                for variant in _in_round_order(TAX_VARIANTS, number):
                    runs[variant].append(self._run(variant, sleeper.pid))
                    log.info(
                        "  tax round %d %s: %.0f ns/request",
                        number + 1,
                        variant,
                        runs[variant][-1]["cpu_ns_per_req"],
                    )
        finally:
            sleeper.kill()
            sleeper.wait()
        return _tax_row(runs)

    def _run(self, variant: str, sleeper: int) -> dict:
        loop = None
        agent = None
        try:
            loop = self.loop.start(self.bench.settings.tax_requests, self.cpu)
            if variant != "none":
                traced = loop.pid if variant == "traced" else sleeper
                agent = self.bench._agent(traced, self.receiver, f"tax-{variant}")
            figures = RequestLoop.go(loop)
        finally:
            if loop is not None and loop.poll() is None:
                loop.kill()
                loop.wait()
            if agent is not None:
                memory = agent.memory()
                agent.stop()
                self.bench._record_start(agent, f"syscall tax ({variant})", memory)
            self.receiver.clear()
        run = {
            "requests": int(figures["requests"]),
            "syscalls_per_req": figures["syscalls"] / figures["requests"],
            "cpu_ns_per_req": figures["cpu_ns"],
            "wall_ns_per_req": figures["wall_ns"],
        }
        if agent is not None:
            run["agent_summary"] = agent.summary()
        return run


def failures(results: Results) -> list[str]:
    """Agents that died during a run, exited non-zero, or printed no exit summary. Every
    round's run is looked at: a medians row would hide one bad round among good ones. Exit
    codes come from the record of every agent start, which holds each round's."""
    found = []
    for start in results.agent_starts:
        if start["exit_code"] != 0:
            found.append(f"{start['scenario']}: the agent exited {start['exit_code']}")
    for row in results.nginx:
        for number, run in enumerate(row["agent"]["rounds"], 1):
            where = f"nginx {row['rate']} round {number}"
            if not run.get("agent_alive", True):
                found.append(f"{where}: the agent died during the run")
            if not run.get("agent_summary"):
                found.append(f"{where}: the agent printed no exit summary")
    for row in results.python:
        if not row.get("agent_alive", True):
            found.append(f"flask {row['variant']}: the agent died during the run")
    for variant, row in results.tax.get("variants", {}).items():
        for number, run in enumerate(row["rounds"], 1):
            summary = run.get("agent_summary")
            if variant != "none" and not summary:
                found.append(f"tax {variant} round {number}: the agent printed no exit summary")
            elif variant == "traced":
                # both sides of every request, the unmeasured ones too, delivered or dropped
                paired = summary.get("exchanges", 0) + summary.get("ring-buffer drops", 0)
                expected = 2 * (run["requests"] + TAX_WARMUP)
                if paired != expected:
                    found.append(
                        f"tax traced round {number}: {paired} exchanges paired in the kernel, "
                        f"not {expected}"
                    )
    return found


def _in_round_order(variants: tuple[str, ...], round_index: int) -> tuple[str, ...]:
    """The variants in the order round `round_index` (from 0) runs them: every other round in
    reverse (A B, B A, A B ...), so that a drift of the machine's speed along the run weighs
    the same on every variant."""
    return variants if round_index % 2 == 0 else variants[::-1]


def _median(values: list[float | None]) -> float | None:
    """The median of the figures a run has (of an even number, the mean of the middle two)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _median_run(variant: str, runs: list[dict]) -> dict:
    """One row for a variant (a Flask app's, or nginx's "base" or "agent"): the medians of its
    runs' figures, so that one run disturbed by the shared VM does not move it; the sums of its
    counts; and every run kept under "rounds"."""
    requests = sum(run["load"]["requests"] for run in runs)
    spans = sum(run["spans"] for run in runs)
    row = {
        "variant": variant,
        "rounds": runs,
        "load": {
            "requests": requests,
            "failed": sum(run["load"].get("failed", 0) for run in runs),
            **{
                key: _median([run["load"][key] for run in runs])
                for key in ("achieved_rps", "mean_us", "p50_us", "p99_us", "p999_us")
            },
        },
        "spans": spans,
        "span_completeness": spans / requests if requests else None,
        "agent_alive": all(run.get("agent_alive", True) for run in runs),
    }
    for key in (
        "target_cpu_s",
        "target_cpu_us_per_req",
        "total_cpu_us_per_req",
        "agent_cpu_s",
        "agent_cpu_us_per_req",
        "receiver_cpu_s",
        "window_s",
    ):
        if any(key in run for run in runs):
            row[key] = _median([run.get(key) for run in runs])
    return row


def _nginx_ratios(base: dict, traced: dict) -> dict[str, float | None]:
    """With the agent against without, for the figures the nginx table compares."""
    return {
        "mean_latency": _ratio(traced["load"]["mean_us"], base["load"]["mean_us"]),
        "p99_latency": _ratio(traced["load"]["p99_us"], base["load"]["p99_us"]),
        "nginx_cpu_per_req": _ratio(traced["target_cpu_us_per_req"], base["target_cpu_us_per_req"]),
        "total_cpu_per_req": _ratio(
            (traced["target_cpu_us_per_req"] or 0) + (traced["agent_cpu_us_per_req"] or 0),
            base["target_cpu_us_per_req"],
        ),
    }


def _summed_summaries(summaries: list[dict[str, int] | None]) -> dict[str, int]:
    """The agents' exit summaries (exchanges, spans, drops, losses...) added up over the
    rounds, so that a drop in any round shows; an agent that printed none adds nothing (and
    failures() reports it)."""
    total: dict[str, int] = {}
    for summary in summaries:
        for key, value in (summary or {}).items():
            total[key] = total.get(key, 0) + value
    return total


def _nginx_row(rate: int, base_runs: list[dict], agent_runs: list[dict]) -> dict:
    """One rate's row from its rounds (the i-th run of each list is round i's): each side's
    medians, their ratios, and the spread of the per-round ratios (each round's run with the
    agent against the same round's without), which says how much one round could be trusted.
    The agent's RSS is the last round's, its peak the highest of any round's, its exit summary
    the sum of every round's."""
    base = _median_run("base", base_runs)
    traced = _median_run("agent", agent_runs)
    codes = [run["agent_exit_code"] for run in agent_runs]
    peaks = [run["agent_hwm_kib"] for run in agent_runs if run["agent_hwm_kib"] is not None]
    per_round = [_nginx_ratios(b, a) for b, a in zip(base_runs, agent_runs, strict=True)]
    return {
        "rate": rate,
        "base": base,
        "agent": traced,
        "agent_idle_cpu_percent": agent_runs[0].get("agent_idle_cpu_percent"),
        "agent_summary": _summed_summaries([run["agent_summary"] for run in agent_runs]),
        "agent_exit_code": next((code for code in codes if code != 0), 0),
        "agent_stop_s": _median([run["agent_stop_s"] for run in agent_runs]),
        "agent_rss_after_kib": agent_runs[-1]["agent_rss_after_kib"],
        "agent_hwm_kib": max(peaks) if peaks else None,
        "ratios": _nginx_ratios(base, traced),
        "ratio_spread": {
            key: _spread([r[key] for r in per_round if r[key] is not None])
            for key in ("nginx_cpu_per_req", "mean_latency")
        },
    }


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
    }


def _tax_row(runs: dict[str, list[dict]]) -> dict:
    """Each variant's medians and its ratio to the loop without the agent, the ns added to
    each system call, and the spread of the per-round ratios (round i against round i)."""
    base = _median([run["cpu_ns_per_req"] for run in runs["none"]])
    syscalls = _median([run["syscalls_per_req"] for run in runs["none"]])
    variants = {}
    for variant, rounds in runs.items():
        cpu = _median([run["cpu_ns_per_req"] for run in rounds])
        paired = [
            run["cpu_ns_per_req"] / alone["cpu_ns_per_req"]
            for run, alone in zip(rounds, runs["none"], strict=True)
        ]
        variants[variant] = {
            "rounds": rounds,
            "requests": sum(run["requests"] for run in rounds),
            "cpu_ns_per_req": cpu,
            "wall_ns_per_req": _median([run["wall_ns_per_req"] for run in rounds]),
            "ratio": _ratio(cpu, base),
            "added_ns_per_syscall": (cpu - base) / syscalls
            if cpu is not None and base is not None and syscalls
            else None,
            "ratio_spread": _spread(paired) if variant != "none" else None,
            "agent_summary": _summed_summaries([run.get("agent_summary") for run in rounds]),
        }
    return {"syscalls_per_req": syscalls, "variants": variants}
