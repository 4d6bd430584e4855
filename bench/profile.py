"""Where the agent's time goes: py-spy samples the agent while nginx serves a fixed rate.

Writes agent-profile.txt (py-spy's collapsed stacks) and profile.md (the functions that hold
the most samples, by self time and by inclusive time, and the split across threads).
This run is separate from the measured ones: sampling slows the process it samples.
"""

from __future__ import annotations

import collections
import logging
import shutil
import subprocess
from pathlib import Path

from bench import load
from bench.procs import stop_process
from bench.services import AgentRun, Nginx, Receiver

log = logging.getLogger("bench")


def record(receiver: Receiver, work: Path, out: Path, rate: int, duration_s: float) -> Path:
    py_spy = shutil.which("py-spy") or str(Path(__import__("sys").executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("bench: --profile needs py-spy: .venv/bin/pip install py-spy")
    server = Nginx(work / "nginx-profile", ["/profile.html"])
    raw = out / "agent-profile.txt"
    try:
        agent = AgentRun(server.pid, receiver.grpc_endpoint, work, "profile").start()
        try:
            log.info("profiling the agent at %d req/s for %gs", rate, duration_s)
            loader = subprocess.Popen(
                [
                    "h2load", "--h1", "-c", str(load.clients_for(rate)[0]), "-t", "1",
                    "--rps", str(load.clients_for(rate)[1]), "-D", f"{round(duration_s + 2)}",
                    server.url("/profile.html"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                subprocess.run(
                    [
                        py_spy, "record", "--pid", str(agent.pid), "--duration",
                        f"{duration_s:.0f}", "--rate", "200", "--format", "raw",
                        "--threads", "--nonblocking", "--output", str(raw),
                    ],
                    capture_output=True, timeout=duration_s + 60, check=True,
                )  # fmt: skip
            finally:
                stop_process(loader, timeout=duration_s + 30)
        finally:
            agent.stop()
            receiver.clear()
    finally:
        server.stop()
    summary = out / "profile.md"
    summary.write_text(summarise(raw, rate))
    return summary


def _function(frame: str) -> str:
    """`Agent._sweep (otelbpf/agent.py:298)` -> `Agent._sweep (otelbpf/agent.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def threads_name(stack: str) -> str:
    first = stack.split(";", 1)[0]
    return first.split(": ", 1)[1] if ": " in first else first


def summarise(raw: Path, rate: int, top: int = 25) -> str:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    stage: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        frames = frames[1:] if frames[0].startswith(("thread", "process")) else frames
        if frames:
            self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        own = [f for f in frames if "otelbpf/" in f or "otelbpf." in f or "(loader.py" in f]
        own = [f for f in own if not f.startswith(("main (", "_run (", "<module>", "Agent.run ("))]
        stage[_function(own[-1]) if own else f"(no agent frame) {threads_name(stack)}"] += count

    def table(counter: collections.Counter[str]) -> list[str]:
        rows = ["| samples | share | function (file:line) |", "|---:|---:|---|"]
        for frame, count in counter.most_common(top):
            rows.append(f"| {count} | {count / total:.1%} | `{frame}` |")
        return rows

    lines = [
        f"# Where the agent's time goes (nginx at {rate} req/s, py-spy, active samples only)",
        "",
        f"{total} samples. By thread:",
        "",
        "| samples | share | thread |",
        "|---:|---:|---|",
        *[f"| {c} | {c / total:.1%} | `{t}` |" for t, c in threads.most_common()],
        "",
        "## By the innermost agent function",
        "",
        "Each sample is charged to the deepest otelbpf function on its stack (the SDK, bcc and",
        "psutil work it calls included); samples with no otelbpf frame, such as the SDK's",
        "export thread, are charged to their thread.",
        "",
        "| samples | share | function |",
        "|---:|---:|---|",
        *[f"| {c} | {c / total:.1%} | `{f}` |" for f, c in stage.most_common(top)],
        "",
        "## Self time",
        "",
        *table(self_time),
        "",
        "## Inclusive time",
        "",
        *table(inclusive),
        "",
    ]
    return "\n".join(lines)
