"""The agent's own environment variables: every CLI setting can come from one of these.

Like the OpenTelemetry SDK's environment_variables module: names as constants, read in one
place. The standard OTEL_* variables are read by the SDK's exporters themselves.
"""

from __future__ import annotations

import os

from otelbpf.errors import SetupError

OTELBPF_ENDPOINT = "OTELBPF_ENDPOINT"
OTELBPF_PROTOCOL = "OTELBPF_PROTOCOL"
OTELBPF_PROBE_MODE = "OTELBPF_PROBE_MODE"
OTELBPF_REQUEST_HEAD_SIZE = "OTELBPF_REQUEST_HEAD_SIZE"
OTELBPF_RESPONSE_HEAD_SIZE = "OTELBPF_RESPONSE_HEAD_SIZE"
OTELBPF_IDLE_FLUSH_MS = "OTELBPF_IDLE_FLUSH_MS"
OTELBPF_MAX_CONNECTIONS = "OTELBPF_MAX_CONNECTIONS"
OTELBPF_RINGBUF_MB = "OTELBPF_RINGBUF_MB"
OTELBPF_KEEP_QUERY_VALUES = "OTELBPF_KEEP_QUERY_VALUES"
OTELBPF_KEEP_COMMAND_LINE = "OTELBPF_KEEP_COMMAND_LINE"
OTELBPF_NO_TLS = "OTELBPF_NO_TLS"
OTELBPF_STATUS_DIR = "OTELBPF_STATUS_DIR"
OTELBPF_NICE = "OTELBPF_NICE"
OTELBPF_CACHE_DIR = "OTELBPF_CACHE_DIR"  # where compiled BPF programs are kept
OTELBPF_IO_ARGS = "OTELBPF_IO_ARGS"  # "entry": read/write arguments from entry hooks
DEFAULT_STATUS_DIR = "/run/otelbpf"
# Niceness 10: a CFS weight of 110 against a service's 1024, so a service that wakes up
# preempts the agent instead of queueing behind an export batch (bench/: nginx latency).
DEFAULT_NICE = 10


def env_str(name: str) -> str | None:
    return os.environ.get(name) or None


def env_choice(name: str, choices: tuple[str, ...]) -> str | None:
    """A variable that must be one of choices: argparse checks a value given on the command
    line, but never a default, so a mistyped variable would pass for "not set"."""
    value = env_str(name)
    if value is not None and value not in choices:
        raise SetupError(
            f"{name}={value!r} is not one of {', '.join(choices)}",
            f"set {name} to one of them, or unset it",
        )
    return value


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    """A whole number, at least minimum when one is given: argparse never checks a default."""
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SetupError(
            f"{name}={value!r} is not a whole number", f"set {name} to one, or unset it"
        ) from None
    if minimum is not None and number < minimum:
        raise SetupError(
            f"{name}={value!r} is below {minimum}",
            f"set {name} to a whole number from {minimum} up, or unset it (default {default})",
        )
    return number


def env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
