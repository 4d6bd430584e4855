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
