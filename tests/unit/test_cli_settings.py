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
