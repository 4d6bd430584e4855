"""`otelbpf coverage`: which processes use which TLS library, and whether it is hooked.

Scans the selected processes' memory maps (the same discovery the agent uses) and, when an
agent is running, reads its status file to say which libraries it has hooked and which
processes send TLS that no hook decrypts.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from otelbpf import procfs
from otelbpf.selection import ProcessSelector, Selectors
from otelbpf.tlslibs import libraries_of
from otelbpf.tlswatch import status_dir


@dataclass(frozen=True)
class CoverageRow:
    pid: int
    process: str
    stack: str
    library: str
    hooks: str
    attached: str  # "yes", "no", "off" (--no-tls), "agent not running", or why not hookable


def running_agent_status(directory: Path | None = None) -> dict | None:
    """What the running agents hooked, merged: a library is hooked if any agent hooked it."""
    merged: dict | None = None
    for path in sorted((directory or status_dir()).glob("status-*.json")):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pid = status.get("agent_pid")
        if not (isinstance(pid, int) and psutil.pid_exists(pid)):
            continue  # an agent that died without cleaning up
        if merged is None:
            merged = {"tls_hooking": False, "libraries": [], "unhooked_tls_exchanges": {}}
        merged["tls_hooking"] = merged["tls_hooking"] or status.get("tls_hooking", True)
        merged["libraries"] += status.get("libraries", [])
        for key, count in status.get("unhooked_tls_exchanges", {}).items():
            merged["unhooked_tls_exchanges"][key] = (
                merged["unhooked_tls_exchanges"].get(key, 0) + count
            )
    return merged


def _process_name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "?"


def coverage(selectors: Selectors, status: dict | None) -> tuple[list[CoverageRow], list[str]]:
    """Rows for every selected process with a TLS library, and notes on unhooked TLS."""
    selector = ProcessSelector(selectors)
    pids = sorted(
        (set(procfs.all_pids()) - {os.getpid()}) if selectors.trace_all else selector.initial_pids()
    )
    hooked_paths: dict[str, int] = {}
    if status is not None:
        for library in status.get("libraries", []):
            name = library["path"].split("/root", 1)[-1]
            hooked_paths[name] = max(hooked_paths.get(name, 0), library.get("uprobes", 0))
    rows = []
    for pid in pids:
        for library in libraries_of(pid):
            inside = library.path.split("/root", 1)[-1]
            hooks = ", ".join(sorted({hook.symbol for hook in library.hooks})) or "-"
            if not library.hooks:
                attached = library.detail or "not hookable"
            elif status is None:
                attached = "agent not running"
            elif not status.get("tls_hooking", True):
                attached = "off (--no-tls)"
            else:
                attached = "yes" if hooked_paths.get(inside) else "no"
            stack = library.stack.value + (f" ({library.detail})" if library.detail else "")
            rows.append(CoverageRow(pid, _process_name(pid), stack, inside, hooks, attached))
    notes = []
    if status is not None:
        for pid, count in sorted(status.get("unhooked_tls_exchanges", {}).items()):
            notes.append(
                f"pid {pid} ({_process_name(int(pid))}): {count} TLS exchanges through a stack "
                "no hook covers (counted as encrypted, not traced)"
            )
    return rows, notes


def format_table(rows: list[CoverageRow]) -> str:
    header = CoverageRow("PID", "PROCESS", "TLS STACK", "LIBRARY", "HOOKS", "ATTACHED")  # type: ignore[arg-type]
    table = [header, *rows]
    widths = [max(len(str(getattr(r, f))) for r in table) for f in CoverageRow.__dataclass_fields__]
    lines = []
    for row in table:
        cells = [
            str(getattr(row, f)).ljust(w)
            for f, w in zip(CoverageRow.__dataclass_fields__, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
