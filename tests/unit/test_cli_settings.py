"""The run command's settings: defaults, and their OTELBPF_* variables."""

from __future__ import annotations

import pytest

from otelbpf import cli, config


def run_args(*argv: str):  # noqa: ANN201
    return cli.build_parser().parse_args(["run", *argv])


def test_the_agent_yields_the_cpu_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.OTELBPF_NICE, raising=False)
    assert run_args().nice == config.DEFAULT_NICE == 10
    assert run_args("--nice", "0").nice == 0


def test_niceness_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.OTELBPF_NICE, "-5")
    assert run_args().nice == -5
    assert run_args("--nice", "3").nice == 3  # the command line wins


@pytest.mark.parametrize("size", [32, 96, 16384])
def test_head_sizes_out_of_range_are_refused_with_the_range(
    size: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Powers of two from 64 to 8192: an event of both heads must stay under the size mask the
    kernel's exchange program applies, or the largest exchanges would be cut and dropped."""
    assert cli.main(["run", "--request-head-size", str(size)]) == 2
    assert f"must be a power of two from 64 to 8192, not {size}" in capsys.readouterr().err


def test_the_largest_head_sizes_are_accepted() -> None:
    from otelbpf.abi import MAX_HEAD_SIZE, AbiLayout

    layout = AbiLayout(MAX_HEAD_SIZE, MAX_HEAD_SIZE)
    assert layout.request_head_size == layout.response_head_size == 8192


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (config.OTELBPF_PROBE_MODE, "Socket", "'Socket' is not one of socket, kprobe, tracepoint"),
        (config.OTELBPF_PROTOCOL, "grpc ", "'grpc ' is not one of grpc, http/protobuf"),
        (config.OTELBPF_RINGBUF_MB, "8M", "'8M' is not a whole number"),
    ],
)
def test_a_mistyped_variable_is_refused_with_a_fix(
    variable: str,
    value: str,
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """argparse checks choices on the command line but not in defaults: a mistyped probe mode
    used to pass for "not set", and the agent chose the mode that taxes every system call."""
    monkeypatch.setenv(variable, value)
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert f"otelbpf: {variable}={expected}\n  how to fix: set {variable} to one" in err


def test_probe_modes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for mode in cli.PROBE_MODES:
        monkeypatch.setenv(config.OTELBPF_PROBE_MODE, mode)
        assert run_args().probe_mode == mode


def test_an_unknown_probe_mode_is_never_taken_for_automatic() -> None:
    from otelbpf.errors import SetupError
    from otelbpf.probes.features import choose_probe_mode

    with pytest.raises(SetupError, match="probe mode 'sockets' is not one of socket, kprobe"):
        choose_probe_mode("sockets")


@pytest.fixture
def no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` must stop at its settings: an agent started would trace until stopped."""
    import otelbpf.agent

    def refuse(*_args: object) -> None:
        raise AssertionError("the agent was started with settings it should have refused")

    monkeypatch.setattr(otelbpf.agent, "Agent", refuse)


SIZES = [
    (config.OTELBPF_IDLE_FLUSH_MS, "--idle-flush-ms", 500),
    (config.OTELBPF_MAX_CONNECTIONS, "--max-connections", 16384),
    (config.OTELBPF_RINGBUF_MB, "--ringbuf-mb", 8),
]


@pytest.mark.usefixtures("no_agent")
@pytest.mark.parametrize("value", ["0", "-5"])
@pytest.mark.parametrize(("variable", "option", "default"), SIZES)
def test_sizes_below_one_are_refused_in_the_variable(
    variable: str,
    option: str,
    default: int,
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """OTELBPF_RINGBUF_MB=0 used to become a one-page ring, and a negative table size went
    into the BPF build."""
    monkeypatch.setenv(variable, value)
    assert cli.main(["run"]) == 2
    assert capsys.readouterr().err == (
        f"otelbpf: {variable}='{value}' is below 1\n"
        f"  how to fix: set {variable} to a whole number from 1 up, or unset it "
        f"(default {default})\n"
    )


@pytest.mark.usefixtures("no_agent")
@pytest.mark.parametrize("value", ["0", "-1"])
@pytest.mark.parametrize(("variable", "option", "default"), SIZES)
def test_sizes_below_one_are_refused_on_the_command_line(
    variable: str,
    option: str,
    default: int,
    value: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(variable, raising=False)
    assert cli.main(["run", option, value]) == 2
    assert capsys.readouterr().err == (
        f"otelbpf: {option} {value} is below 1\n"
        f"  how to fix: give {option} a whole number from 1 up, or leave it out\n"
    )


def test_sizes_from_one_up_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, _option, _default in SIZES:
        monkeypatch.setenv(variable, "1")
    from_variables = cli._agent_config(run_args())
    assert (
        from_variables.idle_flush_ms,
        from_variables.max_connections,
        from_variables.ringbuf_bytes,
    ) == (1, 1, 1 << 20)
    given = cli._agent_config(
        run_args("--idle-flush-ms", "2", "--max-connections", "3", "--ringbuf-mb", "4")
    )
    assert (given.idle_flush_ms, given.max_connections, given.ringbuf_bytes) == (2, 3, 4 << 20)
