"""What the tests that compile BPF programs with bcc need: root, bcc, and its kernel headers."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import pytest

from otelbpf import preflight


def skip_reason() -> str | None:
    """Why bcc cannot compile and load programs here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root: bcc compiles and loads BPF programs"
    has_bcc = (
        importlib.util.find_spec("bcc") is not None or (preflight.DIST_PACKAGES / "bcc").is_dir()
    )
    if not has_bcc:
        return "bcc (python3-bpfcc) is not installed"
    return None


@contextlib.contextmanager
def bcc_compiling() -> Iterator[object]:
    """bcc's module, set up as the agent's compile child has it (tracefs, kernel headers)."""
    preflight.check_privileges()
    preflight.ensure_tracefs()
    with pytest.MonkeyPatch.context() as env:
        headers = preflight.find_kernel_headers()
        if headers is not None:
            env.setenv("BCC_KERNEL_SOURCE", str(headers))
        yield preflight.import_bcc()
