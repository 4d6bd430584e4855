"""Preflight checks fail with a message and a fix: tracefs that cannot be mounted, no bcc."""

from __future__ import annotations

import os
import sys

import pytest

from otelbpf import preflight
from otelbpf.errors import SetupError


def test_tracefs_that_cannot_be_mounted(monkeypatch, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mount(2) answers EPERM before ENOENT for non-root")
    missing = tmp_path / "no" / "tracing"
    monkeypatch.setattr(preflight, "TRACEFS", missing)
    monkeypatch.setattr(preflight, "DEBUGFS_TRACING", tmp_path / "debug" / "tracing")
    with pytest.raises(SetupError) as raised:
        preflight.ensure_tracefs()
    assert raised.value.message == (
        f"tracefs is not mounted and mounting it at {missing} failed: No such file or directory"
    )
    assert raised.value.fix == f"mount it yourself: mount -t tracefs nodev {missing}"


def test_bcc_not_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "DIST_PACKAGES", tmp_path)  # no bcc there
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if "bcc" not in p and "dist-packages" not in p]
    )
    monkeypatch.delitem(sys.modules, "bcc", raising=False)
    for check in (preflight.import_bcc, preflight.check_bcc):
        with pytest.raises(SetupError) as raised:
            check()
        assert (
            "bcc (the BPF Compiler Collection's Python binding) is not installed"
            in raised.value.message
        )
        assert "apt-get install python3-bpfcc" in raised.value.fix


def test_headers_from_bcc_kernel_source(monkeypatch, tmp_path):
    (tmp_path / "include").mkdir()
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path))
    assert preflight.find_kernel_headers() == tmp_path


def test_privileges_without_capabilities(monkeypatch):
    monkeypatch.setattr(preflight, "effective_capabilities", lambda: 0)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SetupError) as raised:
        preflight.check_privileges()
    assert "not running as root" in raised.value.message
    assert "run it as root" in raised.value.fix
