"""Command line: `otelbpf run`, `otelbpf check` and `otelbpf coverage`.

Every setting also has an OTELBPF_* environment variable (see otelbpf.config); the standard
OTEL_* variables configure export. Errors the user can fix print a message and a fix, and
exit non-zero: never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from otelbpf import __version__, config
from otelbpf.errors import SetupError
from otelbpf.probes.features import ProbeMode
from otelbpf.selection import Selectors

if TYPE_CHECKING:
    from otelbpf.agent import AgentConfig

log = logging.getLogger("otelbpf")


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port")
    return value


def _pid(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a process id")
    return value


PROTOCOLS = ("grpc", "http/protobuf")
# The least each sizing option takes, on the command line and in its OTELBPF_* variable: the
# kernel takes any number, and would run a 0 MiB ring as one page and a negative table size
# into the BPF build. An idle flush of 0 is what the exit uses to flush everything at once:
# while tracing it would end every answered exchange at the next sweep, mid-response.
MINIMUMS = {"idle_flush_ms": 1, "max_connections": 1, "ringbuf_mb": 1}
PROBE_MODES = tuple(mode.value for mode in ProbeMode)  # one list: the enum the loader uses


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otelbpf",
        description="Trace the requests processes serve and make, from the kernel, as "
        "OpenTelemetry spans and metrics. No code change, no restart.",
    )
    parser.add_argument("--version", action="version", version=f"otelbpf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="trace until SIGINT or SIGTERM",
        description="Trace until SIGINT/SIGTERM, then flush every pending span and metric, "
        "detach every probe and exit. Selectors combine as a union; with none, every process "
        "but the agent is traced. With no OTLP endpoint configured, spans print to stdout.",
    )
    select = run.add_argument_group("which processes")
    select.add_argument(
        "--pid",
        type=_pid,
        action="append",
        default=[],
        metavar="N",
        help="trace process N and the children it forks (repeatable)",
    )
    select.add_argument(
        "--port",
        type=_port,
        action="append",
        default=[],
        metavar="N",
        help="trace processes listening on or connecting to TCP port N (repeatable)",
    )
    select.add_argument(
        "--exe",
        action="append",
        default=[],
        metavar="GLOB",
        help="trace processes whose executable name or path matches GLOB, "
        "including ones started later (repeatable)",
    )
    export = run.add_argument_group("where data goes (overrides OTEL_EXPORTER_OTLP_*)")
    export.add_argument(
        "--endpoint",
        default=config.env_str(config.OTELBPF_ENDPOINT),
        help="OTLP endpoint, e.g. http://localhost:4318 or http://localhost:4317",
    )
    export.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=config.env_choice(config.OTELBPF_PROTOCOL, PROTOCOLS),
        help="OTLP protocol (default: OTEL_EXPORTER_OTLP_PROTOCOL, else guessed "
        "from the port: 4317 is grpc, anything else http/protobuf)",
    )
    kernel = run.add_argument_group("kernel side")
    kernel.add_argument(
        "--probe-mode",
        choices=PROBE_MODES,
        default=config.env_choice(config.OTELBPF_PROBE_MODE, PROBE_MODES),
        help="how socket calls are hooked (default: socket tracepoints where the kernel "
        "has them with BTF, Linux 6.5 on x86-64; else kprobes; else syscall tracepoints)",
    )
    kernel.add_argument(
        "--request-head-size",
        type=int,
        default=config.env_int(config.OTELBPF_REQUEST_HEAD_SIZE, 1024),
        help="request bytes captured per exchange, a power of two, 64 to 8192 (default 1024)",
    )
    kernel.add_argument(
        "--response-head-size",
        type=int,
        default=config.env_int(config.OTELBPF_RESPONSE_HEAD_SIZE, 512),
        help="response bytes captured per exchange, a power of two, 64 to 8192 (default 512)",
    )
    kernel.add_argument(
        "--idle-flush-ms",
        type=int,
        default=config.env_int(
            config.OTELBPF_IDLE_FLUSH_MS, 500, minimum=MINIMUMS["idle_flush_ms"]
        ),
        help="an answered exchange idle this long is complete, 1 or more (default 500)",
    )
    kernel.add_argument(
        "--max-connections",
        type=int,
        default=config.env_int(
            config.OTELBPF_MAX_CONNECTIONS, 16384, minimum=MINIMUMS["max_connections"]
        ),
        help="connections tracked at once, 1 or more (default 16384)",
    )
    kernel.add_argument(
        "--ringbuf-mb",
        type=int,
        default=config.env_int(config.OTELBPF_RINGBUF_MB, 8, minimum=MINIMUMS["ringbuf_mb"]),
        help="ring buffer size in MiB, 1 or more (default 8)",
    )
    kernel.add_argument(
        "--no-tls",
        dest="tls",
        action="store_false",
        default=not config.env_bool(config.OTELBPF_NO_TLS),
        help="do not hook TLS libraries: HTTPS is then counted as encrypted, never traced",
    )
    kernel.add_argument(
        "--nice",
        type=int,
        default=config.env_int(config.OTELBPF_NICE, config.DEFAULT_NICE),
        metavar="N",
        help="the agent's scheduling niceness, -20..19 (default %(default)s): the traced "
        "services win the CPU; an agent short of CPU drops and counts exchanges",
    )
    privacy = run.add_argument_group("privacy")
    privacy.add_argument(
        "--keep-query-values",
        action="store_true",
        default=config.env_bool(config.OTELBPF_KEEP_QUERY_VALUES),
        help="export query-string and path-parameter values instead of REDACTED",
    )
    privacy.add_argument(
        "--keep-command-line",
        action="store_true",
        default=config.env_bool(config.OTELBPF_KEEP_COMMAND_LINE),
        help="export each process's arguments (process.command_line), which may hold "
        "credentials; by default only the command (process.command)",
    )

    commands.add_parser(
        "check",
        help="check that this machine can run the agent, and say how; compiles the BPF "
        "programs, puts them through the verifier and caches them for `run`",
    )

    cover = commands.add_parser(
        "coverage",
        help="which processes use which TLS library, and whether the running agent hooks it",
        description="List the TLS libraries of the selected processes (all, with no selector) "
        "and, if an agent is running, whether it has hooked them and which processes send TLS "
        "that no hook decrypts.",
    )
    cover.add_argument("--pid", type=_pid, action="append", default=[], metavar="N")
    cover.add_argument("--port", type=_port, action="append", default=[], metavar="N")
    cover.add_argument("--exe", action="append", default=[], metavar="GLOB")
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s otelbpf %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # the SDK's exporters log every retry; one line per failure is enough here
    logging.getLogger("opentelemetry").setLevel(logging.ERROR if not verbose else logging.DEBUG)


def _check_minimums(args: argparse.Namespace) -> None:
    """The command line's values: a variable's were checked when it became the default."""
    for dest, minimum in MINIMUMS.items():
        value = getattr(args, dest)
        if value < minimum:
            option = "--" + dest.replace("_", "-")
            raise SetupError(
                f"{option} {value} is below {minimum}",
                f"give {option} a whole number from {minimum} up, or leave it out",
            )


def _agent_config(args: argparse.Namespace) -> AgentConfig:
    from otelbpf.agent import AgentConfig

    _check_minimums(args)
    return AgentConfig(
        selectors=Selectors(tuple(args.pid), tuple(args.port), tuple(args.exe)),
        probe_mode=args.probe_mode,
        endpoint=args.endpoint,
        protocol=args.protocol,
        request_head_size=args.request_head_size,
        response_head_size=args.response_head_size,
        idle_flush_ms=args.idle_flush_ms,
        max_connections=args.max_connections,
        ringbuf_bytes=args.ringbuf_mb << 20,
        keep_query_values=args.keep_query_values,
        keep_command_line=args.keep_command_line,
        tls=args.tls,
        nice=args.nice,
    )


def _run(args: argparse.Namespace) -> int:
    from otelbpf.agent import Agent, install_signal_handlers

    agent = Agent(_agent_config(args))
    install_signal_handlers(agent)
    return agent.run()


def _check(parser: argparse.ArgumentParser) -> int:
    from otelbpf import preflight
    from otelbpf.agent import probe_settings
    from otelbpf.probes import kernel_layout
    from otelbpf.probes.features import choose_probe_mode, io_args_at_exit, kprobes_available

    headers = preflight.run_all()  # privileges, tracefs, headers and bcc, in that order
    print(f"tracefs: {preflight.ensure_tracefs()}")
    print(f"kernel headers: {headers or 'the running kernel own (/lib/modules)'}")
    bcc = preflight.import_bcc()
    print(f"bcc: {getattr(bcc, '__file__', '?')}")
    print(f"kprobes: {'available' if kprobes_available() else 'not available'}")
    run_args = parser.parse_args(["run"])  # run's defaults: OTELBPF_* variables included
    choice = choose_probe_mode(run_args.probe_mode)
    print(f"probe mode: {choice.mode.value} ({choice.reason})")
    io_args = io_args_at_exit(choice.mode)
    print(f"read and write arguments: {io_args.reason}")
    from otelbpf.probes.loader import verify_programs  # after the preflight: bcc's paths

    # the programs `otelbpf run` would load with its defaults (and this environment's
    # variables): compiled, or taken from the cache, and every one through the verifier.
    # The compile is cached, so the first `run` after a check starts without compiling.
    settings = probe_settings(
        _agent_config(run_args),
        io_args.at_exit,
        choice.mode is ProbeMode.SOCKET,
    )
    verified = verify_programs(settings, choice.mode)
    source = "from the cache" if verified.from_cache else f"compiled in {verified.compile_s:.1f}s"
    print(
        f"BPF programs: {verified.count} pass the kernel's verifier ({source}; cached for "
        f"`otelbpf run` in {verified.cache_path.parent})"
    )
    if verified.tls_rejected:
        print(
            "TLS uprobe programs the verifier refused (run goes on without them): "
            + ", ".join(verified.tls_rejected)
        )
    addresses = "the kernel's socket (BTF)" if kernel_layout.cflags() else "/proc, while it lives"
    print(f"client address of an accept(fd, NULL, NULL): from {addresses}")
    return 0


def _coverage(args: argparse.Namespace) -> int:
    from otelbpf.coverage import coverage, format_table, running_agent_status

    status = running_agent_status()
    selectors = Selectors(tuple(args.pid), tuple(args.port), tuple(args.exe))
    rows, notes = coverage(selectors, status)
    if status is None:
        print("no otelbpf agent is running: showing what it would hook")
    if rows:
        print(format_table(rows))
    else:
        print("no selected process has a TLS library mapped")
    for note in notes:
        print(note)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # its defaults read the OTELBPF_* variables
        args = parser.parse_args(argv)
        _setup_logging(args.verbose)
        if args.command == "run":
            return _run(args)
        if args.command == "coverage":
            return _coverage(args)
        return _check(parser)
    except SetupError as error:
        print(f"otelbpf: {error.message}\n  how to fix: {error.fix}", file=sys.stderr)
        return error.exit_code
    except ValueError as error:  # settings out of range (head sizes and the like)
        print(f"otelbpf: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
