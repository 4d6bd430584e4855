"""results.md (the table the README shows), results.json (every number) and results.png."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from dataclasses import asdict
from pathlib import Path

from bench.procs import ROOT
from bench.scenarios import Results, Settings


def commit_of(source: Path) -> str:
    """The source's commit: from git, or from the COMMIT file a `git archive` copy may hold."""
    marker = source / "COMMIT"
    if marker.exists():
        return marker.read_text().strip()[:12] + " (snapshot)"
    commit = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    if not commit:
        return f"? ({source})"
    dirty = subprocess.run(
        ["git", "-C", str(source), "status", "--porcelain", "--", "otelbpf", "bpf"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return commit + (" + uncommitted changes to otelbpf/ or bpf/" if dirty else "")


def machine(source: Path = ROOT) -> dict[str, object]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    commit = commit_of(source)
    versions = {}
    for program, argv in {"nginx": ["nginx", "-v"], "h2load": ["h2load", "--version"]}.items():
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            versions[program] = (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            versions[program] = "?"
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit,
        **versions,
    }


def _ms(us: float | None) -> str:
    return "–" if us is None else f"{us / 1000:.2f}"


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "–" if value is None else fmt.format(value)


def _x(ratio: float | None) -> str:
    return "–" if ratio is None else f"×{ratio:.2f}"


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _mib(kib: int | None) -> str:
    return "–" if kib is None else f"{kib / 1024:.0f}"


def _losses(summary: dict[str, int], exit_code: int | None = 0, alive: bool = True) -> str:
    skipped = {k: v for k, v in summary.items() if k not in ("exchanges", "spans") and v}
    parts = [f"{v} {k}" for k, v in skipped.items()]
    if not alive:
        parts.append("**agent died during the run**")
    if exit_code != 0:
        parts.append(f"**agent exited {exit_code}**")
    if not summary:
        parts.append("no exit summary")
    return ", ".join(parts) or "none"


def _ratio_spread_line(row: dict) -> str:
    """How far apart the rounds' own ratios (each round's run with the agent against the same
    round's without) were: the medians' ratio is only as good as that spread allows."""
    spread = row.get("ratio_spread", {})

    def span(key: str) -> str:
        s = spread.get(key)
        return "–" if not s else f"{_x(s['min'])}–{_x(s['max'])}"

    rounds = len(row["agent"].get("rounds", []))
    return (
        f"- {row['rate']:,} req/s, per-round ratios ({rounds} round{'s' * (rounds != 1)}): "
        f"nginx CPU {span('nginx_cpu_per_req')}, mean latency {span('mean_latency')}"
    )


TAX_LABELS = {
    "none": "without the agent",
    "untraced": "agent tracing another process",
    "traced": "agent tracing the loop",
}


def _tax_section(tax: dict, settings: Settings) -> list[str]:
    """Section 4: the request loop's CPU per request, per variant."""
    if not tax:
        return []
    lines = [
        "",
        "## 4. The syscall tax: what a traced and an untraced process pay",
        "",
        "bench/apps/request_loop.c: one process, client and server of a keep-alive connection "
        "over TCP loopback, pinned to one CPU, making a static-file server's calls for every "
        "request (recvfrom, openat, newfstatat, writev, sendfile, close) and its client's "
        f"(sendto, read): {_num(tax['syscalls_per_req'], '{:.1f}')} system calls a request. "
        f"{settings.tax_requests:,} requests per run after 1,000 unmeasured, "
        f"{settings.tax_rounds} rounds of every variant, every other round in reverse order; "
        "each figure is the median of a variant's runs. CPU is the loop's own (user + system). "
        "The untraced variant's agent traces a sleeping process: its cost is what every "
        "other process on the host pays. The traced loop is two exchanges a request (its "
        "client and its server side).",
        "",
        "| variant | loop CPU ns/request (vs without) | added ns per system call "
        "| per-round ratios | exchanges paired in the kernel |",
        "|---|---:|---:|---|---:|",
    ]
    for variant, row in tax["variants"].items():
        spread = row["ratio_spread"]
        summary = row["agent_summary"]
        paired = "–"
        if "exchanges" in summary:
            drops = summary.get("ring-buffer drops", 0)
            paired = f"{summary['exchanges'] + drops:,} ({drops:,} dropped at the ring)"
        added = "–" if variant == "none" else _num(row["added_ns_per_syscall"])
        rounds = "–" if not spread else f"{_x(spread['min'])}–{_x(spread['max'])}"
        lines.append(
            f"| {TAX_LABELS[variant]} | {_num(row['cpu_ns_per_req'], '{:,.0f}')} "
            f"({_x(row['ratio'])}) | {added} | {rounds} | {paired} |"
        )
    return lines


def markdown(results: Results, settings: Settings, info: dict, extra: dict) -> str:
    mode = "quick smoke (tiny loads: not for comparison)" if settings.quick else "full"
    lines = [
        "# otelbpf benchmark results",
        "",
        f"Run {extra['finished']} ({mode}), otelbpf commit {info['commit']}, "
        f"{extra['duration_s']:.0f} s in all.",
        "",
        f"Machine: {info['cores']} cores ({info['cpu_model']}), {info['memory_gib']} GiB, "
        f"Linux {info['kernel']}, probe mode **{results.probe_mode or '?'}**, "
        f"Python {info['python']}, {info['nginx']}, {info['h2load']}. "
        "The load generator, the server, the agent and the OTLP receiver share these cores.",
        f"Load average at start: {extra['loadavg_start']}; at end: {extra['loadavg_end']}.",
    ]
    for failure in extra.get("failures", []):
        lines.append(f"**Invalid:** {failure}.")
    if extra.get("other_agents"):
        lines.append(
            f"**Caution:** {extra['other_agents']} other otelbpf agent(s) were running on the "
            "machine during the run; the numbers carry their noise."
        )
    lines += ["", "## 1. nginx under fixed request rates", ""]
    lines += [
        "h2load --h1, 1 thread, 200 req/s per keep-alive connection; nginx 1 worker, 116-byte "
        f"static file, access_log off. {settings.nginx_rounds} alternating rounds (without, "
        f"with, with, without ...) of {settings.nginx_duration_s:g} s per variant, each run "
        f"after a {settings.warmup_s:g} s warm-up, a fresh agent started for each round's run "
        "with it: each figure is the median of a variant's rounds (requests and spans their "
        "sums), each ratio that of the medians; drops and losses are summed over the rounds. "
        "Agent: `otelbpf run --pid <nginx master> --endpoint <receiver> --protocol grpc`, "
        "OTEL_BSP_SCHEDULE_DELAY=200, OTEL_BSP_MAX_QUEUE_SIZE=65536, "
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=2048, OTEL_METRIC_EXPORT_INTERVAL=1000.",
        "",
        "| target req/s | achieved req/s (without / with) | requests served (with) "
        "| spans / requests | agent CPU µs/req | nginx CPU µs/req (without → with) "
        "| mean latency ms (without → with) | p99 latency ms (without → with) "
        "| agent peak RSS MiB | ring-buffer drops | other losses |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in results.nginx:
        base, traced, ratios = row["base"], row["agent"], row["ratios"]
        summary = row["agent_summary"]
        lines.append(
            f"| {row['rate']} "
            f"| {base['load']['achieved_rps']:.0f} / {traced['load']['achieved_rps']:.0f} "
            f"| {traced['load']['requests']} "
            f"| {traced['spans']} ({_pct(traced['span_completeness'])}) "
            f"| {_num(traced['agent_cpu_us_per_req'])} "
            f"| {_num(base['target_cpu_us_per_req'], '{:.1f}')} → "
            f"{_num(traced['target_cpu_us_per_req'], '{:.1f}')} "
            f"({_x(ratios['nginx_cpu_per_req'])}) "
            f"| {_ms(base['load']['mean_us'])} → {_ms(traced['load']['mean_us'])} "
            f"({_x(ratios['mean_latency'])}) "
            f"| {_ms(base['load']['p99_us'])} → {_ms(traced['load']['p99_us'])} "
            f"({_x(ratios['p99_latency'])}) "
            f"| {_mib(row['agent_hwm_kib'])} "
            f"| {summary.get('ring-buffer drops', '?')} "
            f"| {_losses(summary, row['agent_exit_code'], traced.get('agent_alive', True))} |"
        )
    if results.nginx:
        lines += [""] + [_ratio_spread_line(row) for row in results.nginx]
        idle = [r["agent_idle_cpu_percent"] for r in results.nginx]
        idle = [v for v in idle if v is not None]
        agent_pct = [
            r["agent"]["agent_cpu_s"] / r["agent"]["window_s"] * 100 for r in results.nginx
        ]
        lines += [
            "",
            "Agent CPU as a share of one core over each loaded window: "
            + ", ".join(
                f"{row['rate']} req/s: {share:.0f}%"
                for row, share in zip(results.nginx, agent_pct, strict=True)
            )
            + (f"; idle (before load): {max(idle):.1f}% at most." if idle else "."),
            "Total CPU per request (nginx + agent) against nginx alone: "
            + ", ".join(
                f"{r['rate']} req/s: {_x(r['ratios']['total_cpu_per_req'])}" for r in results.nginx
            )
            + ".",
        ]
    lines += ["", "## 2. A Python web app: otelbpf against in-process instrumentation", ""]
    lines += [
        f"Flask {extra.get('flask', '?')} on waitress (8 threads, one process), one JSON route, "
        f"{settings.app_rate} req/s over {settings.app_clients} keep-alive connections for "
        f"{settings.app_duration_s:g} s per run, {settings.app_rounds} rounds of every variant, "
        "every other round in reverse order (A B C C B A ...); each figure is the median of a "
        "variant's runs, requests and spans their sums. In-process: "
        "opentelemetry-instrumentation-flask with "
        "the SDK's BatchSpanProcessor, periodic metric reader and OTLP/gRPC exporters, "
        "same variables, same receiver.",
        "",
        "| variant | requests served | spans / requests | app CPU µs/req | agent CPU µs/req "
        "| total CPU µs/req (vs bare) | mean latency ms (vs bare) | p99 latency ms (vs bare) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results.python:
        ratios = row.get("ratios", {})
        spans = (
            "–"
            if row["variant"] == "bare"
            else (f"{row['spans']} ({_pct(row['span_completeness'])})")
        )
        lines.append(
            f"| {row['variant']} | {row['load']['requests']} | {spans} "
            f"| {_num(row['target_cpu_us_per_req'])} "
            f"| {_num(row.get('agent_cpu_us_per_req'))} "
            f"| {_num(row['total_cpu_us_per_req'])} ({_x(ratios.get('total_cpu_per_req'))}) "
            f"| {_ms(row['load']['mean_us'])} ({_x(ratios.get('mean_latency'))}) "
            f"| {_ms(row['load']['p99_us'])} ({_x(ratios.get('p99_latency'))}) |"
        )
    start = results.startup
    lines += ["", "## 3. Start-up and memory", ""]
    if start:

        def spread(key: str, unit: str, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
            s = start.get(key)
            if not s:
                return "–"
            return (
                f"{fmt.format(s['median'] / scale)} {unit} "
                f"(min {fmt.format(s['min'] / scale)}, max {fmt.format(s['max'] / scale)}, "
                f"n={s['n']})"
            )

        lines += [
            "| measure | value |",
            "|---|---|",
            f'| process start → "tracing" logged (median) | {spread("startup_s", "s")} |',
            f'| the agent\'s own "started in" figure | {spread("self_reported_startup_s", "s")} |',
            "| the same, for a start that compiles (empty cache: a new machine, kernel or "
            f"version) | {spread('compiling_startup_s', 's')} |",
            f"| the compile itself, in its child process | {spread('compile_s', 's')} |",
            "| the compile's child process, peak RSS (the agent never holds it) | "
            f"{spread('compile_peak_kib', 'MiB', 1024, '{:.0f}')} |",
            f"| SIGINT → exit, final flush included | {spread('stop_s', 's')} |",
            f"| RSS once tracing | {spread('rss_idle_kib', 'MiB', 1024, '{:.0f}')} |",
        ]
        for rate, kib in start.get("rss_after_load_kib", {}).items():
            hwm = start.get("hwm_kib", {}).get(rate)
            lines.append(
                f"| RSS after the {rate} req/s run (peak VmHWM) | {_mib(kib)} MiB "
                f"({_mib(hwm)} MiB) |"
            )
        lines.append(
            "| kernel memory of its BPF maps (memlock; not in RSS, charged to its cgroup) | "
            f"{spread('bpf_maps_kib', 'MiB', 1024, '{:.0f}')} |"
        )
        lines.append(f"| agent exit codes | {', '.join(map(str, start.get('exit_codes', [])))} |")
    lines += _tax_section(results.tax, settings)
    lines += [
        "",
        "Every number is in results.json; bench/README.md says what each one means.",
        "",
    ]
    return "\n".join(lines)


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    rates = [r["rate"] for r in results.nginx]
    labels = [f"{r['rate']}\n(got {r['agent']['load']['achieved_rps']:.0f})" for r in results.nginx]
    xs = range(len(rates))
    width = 0.38

    ax = axes[0][0]
    for offset, key, label, color in (
        (-width / 2, "base", "without agent", "#4c72b0"),
        (width / 2, "agent", "with agent", "#dd8452"),
    ):
        means = [r[key]["load"]["mean_us"] / 1000 for r in results.nginx]
        p99s = [(r[key]["load"]["p99_us"] or 0) / 1000 for r in results.nginx]
        pos = [x + offset for x in xs]
        ax.bar(pos, p99s, width, color=color, alpha=0.45, label=f"p99, {label}")
        ax.bar(pos, means, width, color=color, label=f"mean, {label}")
    ax.set_xticks(list(xs), labels)
    ax.set_xlabel("target req/s")
    ax.set_ylabel("ms")
    shown = [
        r[k]["load"][m]
        for r in results.nginx
        for k in ("base", "agent")
        for m in ("mean_us", "p99_us")
        if r[k]["load"][m]
    ]
    if shown and max(shown) / min(shown) > 30:
        ax.set_yscale("log")
    ax.set_title("nginx latency (h2load): mean (dark) and p99 (light)")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    base = [r["base"]["target_cpu_us_per_req"] or 0 for r in results.nginx]
    nginx_with = [r["agent"]["target_cpu_us_per_req"] or 0 for r in results.nginx]
    agent = [r["agent"]["agent_cpu_us_per_req"] or 0 for r in results.nginx]
    ax.bar([x - width / 2 for x in xs], base, width, color="#4c72b0", label="nginx, without")
    ax.bar([x + width / 2 for x in xs], nginx_with, width, color="#dd8452", label="nginx, with")
    ax.bar(
        [x + width / 2 for x in xs],
        agent,
        width,
        bottom=nginx_with,
        color="#c44e52",
        label="agent process",
    )
    ax.set_xticks(list(xs), labels)
    ax.set_xlabel("target req/s")
    ax.set_ylabel("CPU µs per request")
    ax.set_title("CPU per request: nginx (incl. probes) + agent")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    completeness = [(r["agent"]["span_completeness"] or 0) * 100 for r in results.nginx]
    share = [r["agent"]["agent_cpu_s"] / r["agent"]["window_s"] * 100 for r in results.nginx]
    ax.bar(
        [x - width / 2 for x in xs],
        completeness,
        width,
        color="#55a868",
        label="spans / requests %",
    )
    ax.bar(
        [x + width / 2 for x in xs], share, width, color="#c44e52", label="agent CPU, % of one core"
    )
    ax.set_xticks(list(xs), labels)
    ax.set_xlabel("target req/s")
    ax.set_ylabel("%")
    ax.set_title("span completeness and agent CPU")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    if results.python:
        names = [
            r["variant"].replace("opentelemetry-instrumentation-flask", "OTel in-process")
            for r in results.python
        ]
        pxs = range(len(names))
        app_cpu = [r["target_cpu_us_per_req"] or 0 for r in results.python]
        agent_cpu = [r.get("agent_cpu_us_per_req") or 0 for r in results.python]
        ax.bar(pxs, app_cpu, 0.5, color="#4c72b0", label="app CPU µs/req")
        ax.bar(pxs, agent_cpu, 0.5, bottom=app_cpu, color="#c44e52", label="agent CPU µs/req")
        ax.set_xticks(list(pxs), names)
        ax.set_ylabel("CPU µs per request")
        # room above the tallest bar for the legend, which sits in the upper left
        ax.set_ylim(0, max(a + b for a, b in zip(app_cpu, agent_cpu, strict=True)) * 1.3 or 1)
        twin = ax.twinx()
        twin.plot(
            pxs,
            [r["load"]["mean_us"] / 1000 for r in results.python],
            "o-",
            color="black",
            label="mean latency ms",
        )
        twin.plot(
            pxs,
            [(r["load"]["p99_us"] or 0) / 1000 for r in results.python],
            "s--",
            color="gray",
            label="p99 latency ms",
        )
        twin.set_ylabel("ms")
        twin.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=8, loc="upper left")
        ax.set_title("Flask app: bare, otelbpf, in-process OpenTelemetry")
    fig.suptitle(f"otelbpf overhead ({results.probe_mode or '?'} mode, {os.cpu_count()} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: Results, settings: Settings, out: Path, extra: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    info = machine(Path(str(extra.get("agent_source", ROOT))))
    info["commit"] = extra.get("commit_at_start", info["commit"])
    try:
        from importlib.metadata import version

        extra["flask"] = version("flask")
    except Exception:  # noqa: BLE001 - a label only
        extra["flask"] = "?"
    extra.setdefault("finished", dt.datetime.now().strftime("%Y-%m-%d %H:%M"))
    md = out / "results.md"
    md.write_text(markdown(results, settings, info, extra))
    js = out / "results.json"
    js.write_text(
        json.dumps(
            {"machine": info, "settings": asdict(settings), "run": extra, **asdict(results)},
            indent=2,
            default=str,
        )
        + "\n"
    )
    png = out / "results.png"
    plot(results, png)
    return [md, js, png]
