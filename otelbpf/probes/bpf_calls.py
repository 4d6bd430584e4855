"""The kernel's BPF calls, through bcc's small C library (libbcc_bpf.so.0, no compiler in it).

bcc ships its compiler (libbcc.so, which maps LLVM and clang: 60+ MiB once relocated) and,
separately, the thin layer over the bpf() and perf_event_open() system calls that bcc itself
uses to create maps, load programs and attach them. The agent compiles once (in a child
process, see compiled.py) and afterwards needs only the thin layer: this module binds it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable
from functools import cache

from otelbpf.errors import SetupError

LIBRARY = "libbcc_bpf.so.0"  # Debian's libbpfcc package, next to libbcc.so.0

# bpf(2): its number, and the command that runs a loaded program on request
SYS_BPF = {"x86_64": 321, "aarch64": 280, "s390x": 351, "ppc64le": 361}.get(os.uname().machine)
BPF_PROG_TEST_RUN = 10

# enum bpf_probe_attach_type (bcc's libbpf.h)
PROBE_ENTRY = 0
PROBE_RETURN = 1

RingCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)


class BccSymbol(ctypes.Structure):
    """struct bcc_symbol, as bcc_resolve_symname fills it."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("demangle_name", ctypes.c_char_p),
        ("module", ctypes.c_void_p),
        ("offset", ctypes.c_ulonglong),
    ]


def _signatures(lib: ctypes.CDLL) -> None:
    c_int, c_uint, c_char_p, c_void_p = (
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_char_p,
        ctypes.c_void_p,
    )
    table: dict[str, tuple[object, list[object]]] = {
        # type, name, key size, value size, max entries, flags
        "bcc_create_map": (c_int, [c_int, c_char_p, c_int, c_int, c_int, c_int]),
        # type, name, insns, size in bytes, license, kernel version, log level, log, log size
        "bcc_prog_load": (
            c_int,
            [c_int, c_char_p, c_void_p, c_int, c_char_p, c_uint, c_int, c_char_p, c_uint],
        ),
        "bpf_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
        "bpf_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_ulonglong]),
        "bpf_delete_elem": (c_int, [c_int, c_void_p]),
        "bpf_get_first_key": (c_int, [c_int, c_void_p, ctypes.c_size_t]),
        "bpf_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
        "bpf_attach_tracepoint": (c_int, [c_int, c_char_p, c_char_p]),
        # prog fd, entry/return, event name, function, offset, maxactive
        "bpf_attach_kprobe": (c_int, [c_int, c_int, c_char_p, c_char_p, ctypes.c_ulonglong, c_int]),
        "bpf_detach_kprobe": (c_int, [c_char_p]),
        # prog fd, entry/return, event name, binary, file offset, pid, ref_ctr_offset
        "bpf_attach_uprobe": (
            c_int,
            [c_int, c_int, c_char_p, c_char_p, ctypes.c_ulonglong, c_int, ctypes.c_uint32],
        ),
        "bpf_detach_uprobe": (c_int, [c_char_p]),
        "bpf_close_perf_event_fd": (c_int, [c_int]),
        "bcc_resolve_symname": (
            c_int,
            [c_char_p, c_char_p, ctypes.c_ulonglong, c_int, c_void_p, ctypes.POINTER(BccSymbol)],
        ),
        "bcc_procutils_free": (None, [c_void_p]),
        "bpf_new_ringbuf": (c_void_p, [c_int, RingCallback, c_void_p]),
        "bpf_poll_ringbuf": (c_int, [c_void_p, c_int]),
        "bpf_consume_ringbuf": (c_int, [c_void_p]),
        "bpf_free_ringbuf": (None, [c_void_p]),
    }
    for name, (restype, argtypes) in table.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            loaded = ctypes.CDLL(LIBRARY, use_errno=True)
        except OSError as error:
            raise SetupError(
                f"cannot load {LIBRARY} (bcc's BPF system-call library): {error}",
                "apt-get install libbpfcc (python3-bpfcc depends on it)",
            ) from None
        _signatures(loaded)
        _lib = loaded
    return _lib


class _TestRunAttr(ctypes.Structure):
    """union bpf_attr's `test` member (linux/bpf.h), as BPF_PROG_TEST_RUN reads it."""

    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def test_run(program_fd: int) -> int:
    """Run a loaded raw-tracepoint program once, now, on this thread (BPF_PROG_TEST_RUN with
    no context); its return value. bcc's library has no binding for it: bpf(2) is called."""
    if SYS_BPF is None:
        raise OSError(errno.ENOSYS, f"bpf(2)'s number on {os.uname().machine} is not known here")
    attr = _TestRunAttr(prog_fd=program_fd)
    result = _libc().syscall(
        ctypes.c_long(SYS_BPF),
        ctypes.c_int(BPF_PROG_TEST_RUN),
        ctypes.byref(attr),
        ctypes.c_uint(ctypes.sizeof(attr)),
    )
    if result < 0:
        raise _failure("running a program on request (BPF_PROG_TEST_RUN)", result)
    return attr.retval


def _failure(what: str, result: int) -> OSError:
    code = ctypes.get_errno() or (-result if result < 0 else 0)
    return OSError(code, f"{what}: {os.strerror(code) if code else 'failed'}")


def create_map(
    kind: int, name: str, key_size: int, value_size: int, entries: int, flags: int
) -> int:
    fd = lib().bcc_create_map(kind, name.encode()[:15], key_size, value_size, entries, flags)
    if fd < 0:
        raise _failure(f"creating map {name}", fd)
    return fd


def _prog_load(
    kind: int, name: str, code: bytes, license_: str, kernel_version: int, log_level: int
) -> tuple[int, str]:
    """bcc_prog_load: the descriptor (or -errno) and, at log level 1, the verifier's log."""
    buffer = ctypes.create_string_buffer(code, len(code))
    log = ctypes.create_string_buffer(1 << 20 if log_level else 0)
    fd = lib().bcc_prog_load(
        kind,
        name.encode()[:15],
        buffer,
        len(code),
        license_.encode(),
        kernel_version,
        log_level,
        log if log_level else None,
        len(log) if log_level else 0,
    )
    return fd, log.value.decode(errors="replace") if log_level else ""


def _rejected(name: str, fd: int, verifier_log: str) -> OSError:
    message = verifier_log.strip()[-2000:]
    error = _failure(f"loading program {name}", fd)
    return OSError(error.errno, f"{error.strerror}\n{message}" if message else error.strerror)


def load_program(kind: int, name: str, code: bytes, license_: str, kernel_version: int) -> int:
    """Load one program; a verifier rejection raises with the verifier's log."""
    fd, _ = _prog_load(kind, name, code, license_, kernel_version, 0)
    if fd >= 0:
        return fd
    fd, verifier_log = _prog_load(kind, name, code, license_, kernel_version, 1)  # for the log
    raise _rejected(name, fd, verifier_log)


def verifier_log(kind: int, name: str, code: bytes, license_: str, kernel_version: int) -> str:
    """The verifier's log (its statistics included) for a program it accepts; the program is
    unloaded again. A rejection raises as load_program does."""
    fd, text = _prog_load(kind, name, code, license_, kernel_version, 1)
    if fd < 0:
        raise _rejected(name, fd, text)
    os.close(fd)
    return text


def lookup(fd: int, key: object, value: object) -> bool:
    return lib().bpf_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value)) == 0  # type: ignore[arg-type]


def update(fd: int, key: object, value: object) -> None:
    result = lib().bpf_update_elem(fd, ctypes.byref(key), ctypes.byref(value), 0)  # type: ignore[arg-type]
    if result < 0:
        raise _failure("map update", result)


def delete(fd: int, key: object) -> bool:
    return lib().bpf_delete_elem(fd, ctypes.byref(key)) == 0  # type: ignore[arg-type]


def next_key(fd: int, key: object | None, out: object) -> bool:
    """The key after key (the first one when key is None); False at the end."""
    if key is None:
        return lib().bpf_get_first_key(fd, ctypes.byref(out), ctypes.sizeof(out)) == 0  # type: ignore[arg-type]
    return lib().bpf_get_next_key(fd, ctypes.byref(key), ctypes.byref(out)) == 0  # type: ignore[arg-type]


def attach_tracepoint(program_fd: int, category: str, event: str) -> int:
    fd = lib().bpf_attach_tracepoint(program_fd, category.encode(), event.encode())
    if fd < 0:
        raise _failure(f"attaching to tracepoint {category}:{event}", fd)
    return fd


def attach_kprobe(program_fd: int, kind: int, event_name: str, function: str) -> int:
    fd = lib().bpf_attach_kprobe(program_fd, kind, event_name.encode(), function.encode(), 0, 0)
    if fd < 0:
        raise _failure(f"attaching a kprobe to {function}", fd)
    return fd


def attach_uprobe(program_fd: int, kind: int, event_name: str, path: str, offset: int) -> int:
    fd = lib().bpf_attach_uprobe(
        program_fd, kind, event_name.encode(), path.encode(), offset, -1, 0
    )
    if fd < 0:
        raise _failure(f"attaching a uprobe to {path}+{offset:#x}", fd)
    return fd


def symbol_offset(path: str, symbol: str) -> int:
    """The file offset of symbol in the ELF file at path, where a uprobe on it goes."""
    found = BccSymbol()
    if (
        lib().bcc_resolve_symname(path.encode(), symbol.encode(), 0, 0, None, ctypes.byref(found))
        < 0
    ):
        raise OSError(f"could not determine address of symbol {symbol} in {path}")
    lib().bcc_procutils_free(found.module)
    return int(found.offset)


def close_perf_event(fd: int) -> None:
    lib().bpf_close_perf_event_fd(fd)


def detach_probe_event(kind: str, event_name: str) -> None:
    """Remove a kprobe/uprobe made through tracefs (older kernels); a no-op for perf PMUs."""
    if kind == "kprobe":
        lib().bpf_detach_kprobe(event_name.encode())
    else:
        lib().bpf_detach_uprobe(event_name.encode())


class RingBuffer:
    """A BPF ring buffer map, drained into a Python callable one record at a time."""

    def __init__(self, map_fd: int, on_record: Callable[[bytes], None]) -> None:
        def trampoline(_ctx: int, data: int, size: int) -> int:
            on_record(ctypes.string_at(data, size))
            return 0

        self._callback = RingCallback(trampoline)  # kept: the C side holds only a pointer
        self._manager = lib().bpf_new_ringbuf(map_fd, self._callback, None)
        if not self._manager:
            raise _failure("opening the ring buffer", -1)

    def poll(self, timeout_ms: int) -> None:
        """Wait for a wake-up or the timeout, then drain: libbpf's poll reads only the rings
        that were woken, and the kernel wakes the reader once per batch of events."""
        lib().bpf_poll_ringbuf(self._manager, timeout_ms)
        lib().bpf_consume_ringbuf(self._manager)

    def close(self) -> None:
        if self._manager:
            lib().bpf_free_ringbuf(self._manager)
            self._manager = None
