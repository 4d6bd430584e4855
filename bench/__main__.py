"""`python -m bench`: the benchmark suite. `--quick` is the CI smoke (tiny loads, seconds).

.venv/bin/python -m bench --snapshot      # full run of the committed HEAD, ~14 min: bench/results/
.venv/bin/python -m bench --quick         # smoke, ~60 s: bench/results/tmp/quick/
.venv/bin/python -m bench --only nginx --profile
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import report, services
from bench.procs import ROOT
from bench.scenarios import Bench, Settings, failures
from bench.services import Receiver, require

log = logging.getLogger("bench")
SCENARIOS = ("nginx", "python", "tax", "startup")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure what otelbpf costs the processes it traces, against the same "
        "workload without it (and, for a Python app, against in-process instrumentation).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="CI smoke: tiny loads, a few seconds per scenario"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="where results.md/.json/.png go (default bench/results, "
        "or bench/results/tmp/quick with --quick)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable; startup always sums up every agent start)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also sample the agent with py-spy at 4000 req/s (a separate, unmeasured run)",
    )
    parser.add_argument(
        "--agent-src",
        type=Path,
        default=None,
        metavar="DIR",
        help="run the agent from this copy of the repository (e.g. a `git archive` of a "
        "commit) instead of the working tree",
    )
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="run the agent from a copy of the committed HEAD taken at start (git archive), so "
        "edits made to the working tree during the run do not mix versions",
    )
    parser.add_argument(
        "--rate",
        action="append",
        type=int,
        metavar="N",
        help="nginx at N req/s only (repeatable; default 1000, 4000 and 10000)",
    )
    parser.add_argument("--keep-work", action="store_true", help="keep logs and h2load files")
    return parser


def _preflight(scenarios: list[str], profile: bool) -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root: the agent loads eBPF programs")
    require("h2load")
    if "tax" in scenarios:
        require("cc")
    if "nginx" in scenarios or "startup" in scenarios:
        require("nginx")
    modules = ["matplotlib", "grpc", "opentelemetry.proto"]
    if "python" in scenarios:
        modules += ["flask", "waitress", "opentelemetry.instrumentation.flask"]
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        raise SystemExit(
            f"bench: missing Python modules {missing}: .venv/bin/pip install -e '.[test,bench]'"
        )
    if (
        profile
        and shutil.which("py-spy") is None
        and not Path(sys.executable).with_name("py-spy").exists()
    ):
        raise SystemExit("bench: --profile needs py-spy: .venv/bin/pip install py-spy")


def _other_agents(own: set[int]) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if any(b"otelbpf" in a for a in argv[:3]) and b"run" in argv:
                count += 1
    return count


def _snapshot(directory: Path) -> Path:
    """The committed HEAD's otelbpf/ and bpf/, copied with `git archive` (the repository is
    only read), with its commit id in COMMIT."""
    import subprocess

    directory.mkdir(parents=True)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "otelbpf", "bpf"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    (directory / "COMMIT").write_text(commit + "\n")
    log.info("agent from a snapshot of %s in %s", commit[:12], directory)
    return directory


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s bench %(message)s", datefmt="%H:%M:%S"
    )
    settings = Settings.smoke() if args.quick else Settings.full()
    if args.rate:
        settings = dataclasses.replace(settings, nginx_rates=tuple(args.rate))
    scenarios = list(args.only or SCENARIOS)
    out = args.results_dir or (ROOT / "bench" / "results" / ("tmp/quick" if args.quick else ""))
    _preflight(scenarios, args.profile)
    if args.agent_src is not None:
        source = args.agent_src.resolve()
        if not (source / "otelbpf" / "cli.py").exists() or not (source / "bpf").is_dir():
            raise SystemExit(f"bench: {source} holds no otelbpf/ and bpf/")
        services.AGENT_SOURCE = source
    # SIGTERM unwinds like Ctrl-C, so every process the bench started is stopped
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    work = Path(tempfile.mkdtemp(prefix="otelbpf-bench-"))
    if args.snapshot:
        services.AGENT_SOURCE = _snapshot(work / "agent-src")
    started = time.monotonic()
    source = services.AGENT_SOURCE or ROOT
    extra: dict[str, object] = {
        "loadavg_start": _loadavg(),
        "scenarios": scenarios,
        "agent_source": str(source),
        "commit_at_start": report.commit_of(source),
    }
    bench = Bench(settings, work)
    receiver = Receiver()
    try:
        extra["other_agents"] = _other_agents({os.getpid(), receiver.pid})
        if "nginx" in scenarios:
            bench.nginx(receiver)
        if "python" in scenarios:
            bench.python(receiver)
        if "tax" in scenarios:
            bench.syscall_tax(receiver)
        bench.startup(receiver)  # always: it also sums up the starts of the other scenarios
        if args.profile:
            from bench import profile

            out.mkdir(parents=True, exist_ok=True)
            path = profile.record(receiver, work, out, rate=4000, duration_s=20)
            log.info("profile: %s", path)
    finally:
        receiver.stop()
        # a snapshot cannot change; the working tree can, under other people's edits
        extra["commit_at_end"] = (
            extra["commit_at_start"] if args.snapshot else report.commit_of(source)
        )
        if args.keep_work:
            log.info("work files kept in %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    extra["loadavg_end"] = _loadavg()
    extra["duration_s"] = time.monotonic() - started
    extra["other_agents"] = max(int(extra["other_agents"]), _other_agents({os.getpid()}))
    extra["failures"] = failures(bench.results)
    if extra["commit_at_end"] != extra["commit_at_start"]:
        extra["failures"].append(
            f"the agent's source changed during the run ({extra['commit_at_start']} -> "
            f"{extra['commit_at_end']}): the runs mix versions; --snapshot avoids this"
        )
    written = report.write(bench.results, settings, out, extra)
    for path in written:
        log.info("wrote %s", path)
    print((out / "results.md").read_text())
    for failure in extra["failures"]:
        log.error("invalid run: %s", failure)
    return 1 if extra["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
