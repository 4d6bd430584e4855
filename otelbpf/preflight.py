"""Checks made before any probe is loaded, each with a message that says how to fix it.

Root or capabilities, tracefs mounted, kernel headers bcc can compile against, bcc itself.
Runs before bcc is imported (only ever in the compile's child process): bcc decides where
tracefs lives at import time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from otelbpf.errors import SetupError

log = logging.getLogger(__name__)

TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS_TRACING = Path("/sys/kernel/debug/tracing")
HEADERS_CACHE = Path("/var/cache/otelbpf/kernel-headers")
DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_privileges() -> None:
    caps = effective_capabilities()
    has = lambda cap: bool(caps >> cap & 1)  # noqa: E731
    if has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON)):
        return
    who = "not running as root" if os.geteuid() != 0 else "running as root without capabilities"
    raise SetupError(
        f"otelbpf needs to load eBPF programs, but it is {who} "
        f"(effective capabilities {caps:#x} lack CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON)",
        "run it as root (sudo .venv/bin/otelbpf run …); in a container add "
        "--privileged, or --cap-add SYS_ADMIN (or BPF, PERFMON and SYS_PTRACE)",
    )


def _mount_tracefs() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mount(b"nodev", str(TRACEFS).encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise SetupError(
            f"tracefs is not mounted and mounting it at {TRACEFS} failed: {os.strerror(err)}",
            f"mount it yourself: mount -t tracefs nodev {TRACEFS}",
        )


def ensure_tracefs() -> Path:
    for path in (TRACEFS, DEBUGFS_TRACING):
        if (path / "events").is_dir():
            return path
    log.info("tracefs is not mounted; mounting it at %s", TRACEFS)
    _mount_tracefs()
    return TRACEFS


def _merge_header_trees(common: Path, arch: Path, target: Path) -> None:
    """One tree of symlinks: the -common folder, then the arch folder over it (Debian's split)."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for source, extra in ((common, []), (arch, ["--remove-destination"])):
        result = subprocess.run(
            ["cp", "-rs", *extra, f"{source}/.", str(tmp)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SetupError(
                f"could not merge kernel headers from {source}: {result.stderr.strip()}",
                "set BCC_KERNEL_SOURCE to a kernel headers tree",
            )
    tmp.rename(target)


def find_kernel_headers() -> Path | None:
    """Headers bcc can compile against. None means bcc finds the running kernel's own.

    Prefers BCC_KERNEL_SOURCE, then /lib/modules/$(uname -r)/build, then Debian's generic
    linux-headers packages merged into a cache folder (nothing is written to /lib/modules).
    Our programs read no kernel struct, so headers of another version are safe.
    """
    configured = os.environ.get("BCC_KERNEL_SOURCE")
    if configured:
        if (Path(configured) / "include").is_dir():
            return Path(configured)
        raise SetupError(
            f"BCC_KERNEL_SOURCE={configured} has no include/ folder",
            "point it at a kernel headers tree, or unset it to let otelbpf find one",
        )
    release = platform.release()
    if (Path("/lib/modules") / release / "build" / "include").is_dir():
        return None
    for arch in sorted(Path("/usr/src").glob("linux-headers-*-amd64"), reverse=True) + sorted(
        Path("/usr/src").glob("linux-headers-*-arm64"), reverse=True
    ):
        version = arch.name.removeprefix("linux-headers-").rsplit("-", 1)[0]
        common = arch.with_name(f"linux-headers-{version}-common")
        if not common.is_dir():
            continue
        target = HEADERS_CACHE / arch.name
        if not (target / "include").is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            log.info("merging %s and %s into %s for bcc", common, arch, target)
            _merge_header_trees(common, arch, target)
        return target
    raise SetupError(
        f"no kernel headers found for kernel {release}: bcc compiles its programs at run time",
        "install generic headers (apt-get install linux-headers-amd64) or run the README's "
        "set-up command; or set BCC_KERNEL_SOURCE to a headers tree",
    )


def _bcc_missing() -> SetupError:
    return SetupError(
        "bcc (the BPF Compiler Collection's Python binding) is not installed",
        "apt-get install python3-bpfcc (or run the README's set-up command)",
    )


def check_bcc() -> None:
    """bcc is there to compile with, without importing it: the agent process never does
    (its compiler stays in the child process otelbpf.probes.compiled starts)."""
    if importlib.util.find_spec("bcc") is None and not (DIST_PACKAGES / "bcc").is_dir():
        raise _bcc_missing()


def import_bcc() -> object:
    """Import bcc, which Debian ships for the system Python only (python3-bpfcc)."""
    try:
        import bcc  # noqa: PLC0415
    except ImportError:
        if (DIST_PACKAGES / "bcc").is_dir() and str(DIST_PACKAGES) not in sys.path:
            sys.path.append(str(DIST_PACKAGES))
            try:
                import bcc  # noqa: PLC0415
            except ImportError as error:
                raise SetupError(
                    f"bcc is installed but does not import: {error}",
                    "reinstall it: apt-get install --reinstall python3-bpfcc",
                ) from None
            return bcc
        raise _bcc_missing() from None
    return bcc


def run_all() -> Path | None:
    """Every check, in the order a user fixes them. Returns the headers folder for bcc."""
    check_privileges()
    ensure_tracefs()
    headers = find_kernel_headers()
    if headers is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(headers)
    check_bcc()
    return headers
