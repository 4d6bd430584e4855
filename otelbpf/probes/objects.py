"""A compiled object loaded into the kernel: its maps created, its programs loaded and attached.

What bcc's BPF class does after its compile, over bcc's system-call library only: maps are
created up front, a program is loaded (and verified) the first time something attaches it,
and every attachment is remembered so close() undoes them all.

The kernel's verifier is most of a start from the cache (here 1.1-1.7 s for the exchange
program alone, 2.4 s for all). preload() starts it early, on as many threads as there are
CPUs, the biggest program first: the load is one system call, made with the GIL released, so
it runs beside the agent's own start-up work and beside the other programs' loads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

from otelbpf.probes import bpf_calls, ringbuf
from otelbpf.probes.compiled import CompiledObject
from otelbpf.probes.maps import BpfMap
from otelbpf.probes.ringbuf import MappedRingBuffer

log = logging.getLogger(__name__)

# enum bpf_prog_type
PROG_KPROBE = 2  # kprobes and uprobes
PROG_TRACEPOINT = 5
PROG_RAW_TRACEPOINT = 17  # run on request by BPF_PROG_TEST_RUN, never attached
# the prefixes kernels give their syscall functions, as bcc looks for them
SYSCALL_PREFIXES = ("__x64_sys_", "__arm64_sys_", "__s390x_sys_", "sys_")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class Attachment:
    fd: int  # the perf event holding the program
    kind: str  # "tracepoint", "kprobe" or "uprobe"
    event_name: str  # the tracefs event, for kprobes and uprobes made the legacy way


class LoadedObject:
    def __init__(self, compiled: CompiledObject) -> None:
        self.compiled = compiled
        self.map_fds: dict[str, int] = {}
        self._specs = {spec.name: spec for spec in compiled.maps}
        self._programs: dict[str, int] = {}
        self._loading: dict[str, Future[int]] = {}
        self._attachments: list[Attachment] = []
        self._rings: list[MappedRingBuffer | bpf_calls.RingBuffer] = []
        try:
            for spec in compiled.maps:
                self.map_fds[spec.name] = bpf_calls.create_map(
                    spec.kind,
                    spec.name,
                    spec.key_size,
                    spec.value_size,
                    spec.max_entries,
                    spec.flags,
                )
        except OSError:
            self.close()
            raise

    # -------------------------------------------------------------- maps

    def map(self, name: str, key_type: type, value_type: type) -> BpfMap:
        spec = self._specs[name]
        return BpfMap(
            name,
            self.map_fds[name],
            spec.kind,
            key_type,
            value_type,
            spec.key_size,
            spec.value_size,
        )

    def ring_buffer(
        self, name: str, on_record: Callable[[bytes], None]
    ) -> MappedRingBuffer | bpf_calls.RingBuffer:
        """A reader of the ring buffer map: its shared memory read directly where the machine
        allows (ringbuf.py), else libbpf's reader through bcc's library."""
        ring: MappedRingBuffer | bpf_calls.RingBuffer
        if ringbuf.supported():
            ring = MappedRingBuffer(self.map_fds[name], self._specs[name].max_entries, on_record)
        else:
            ring = bpf_calls.RingBuffer(self.map_fds[name], on_record)
        self._rings.append(ring)
        return ring

    # -------------------------------------------------------------- programs

    def preload(self, programs: Iterable[tuple[str, int]]) -> None:
        """Start loading these (name, kind) programs in the background, biggest first."""
        wanted = sorted(
            {name: kind for name, kind in programs if name in self.compiled.programs}.items(),
            key=lambda item: -len(self.compiled.programs[item[0]].code),
        )
        if not wanted:
            return
        pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="otelbpf-verify")
        for name, kind in wanted:
            if name not in self._programs and name not in self._loading:
                self._loading[name] = pool.submit(self._load, name, kind)
        pool.shutdown(wait=False)  # its threads end when the queue is done

    def program(self, name: str, kind: int) -> int:
        """The loaded program's descriptor; the kernel's verifier runs on first use."""
        fd = self._programs.get(name)
        if fd is None:
            loading = self._loading.pop(name, None)
            # a rejection raises here, where the program is wanted, as a direct load would
            fd = loading.result() if loading is not None else self._load(name, kind)
            self._programs[name] = fd
        return fd

    def _load(self, name: str, kind: int) -> int:
        code = self.compiled.programs[name].with_map_fds(self.map_fds)
        return bpf_calls.load_program(
            kind, name, code, self.compiled.license, self.compiled.kernel_version
        )

    def run(self, program: str) -> int:
        """Run a raw-tracepoint program once, now, in this thread; its return value."""
        return bpf_calls.test_run(self.program(program, PROG_RAW_TRACEPOINT))

    def attach_tracepoint(self, tracepoint: str, program: str) -> None:
        category, _, event = tracepoint.partition(":")
        fd = bpf_calls.attach_tracepoint(self.program(program, PROG_TRACEPOINT), category, event)
        self._attachments.append(Attachment(fd, "tracepoint", ""))

    def attach_kprobe(self, function: str, program: str, on_return: bool = False) -> None:
        kind = bpf_calls.PROBE_RETURN if on_return else bpf_calls.PROBE_ENTRY
        event_name = f"otelbpf_{'r' if on_return else 'p'}_{function}_{os.getpid()}"
        fd = bpf_calls.attach_kprobe(self.program(program, PROG_KPROBE), kind, event_name, function)
        self._attachments.append(Attachment(fd, "kprobe", event_name))

    def attach_uprobe(self, path: str, offset: int, program: str, on_return: bool = False) -> None:
        kind = bpf_calls.PROBE_RETURN if on_return else bpf_calls.PROBE_ENTRY
        tag = _UNSAFE.sub("_", path)[-64:]
        event_name = f"otelbpf_{'r' if on_return else 'p'}_{tag}_{offset:x}_{os.getpid()}"
        fd = bpf_calls.attach_uprobe(
            self.program(program, PROG_KPROBE), kind, event_name, path, offset
        )
        self._attachments.append(Attachment(fd, "uprobe", event_name))

    # -------------------------------------------------------------- shutdown

    def close(self) -> None:
        """Detach everything, then free the programs and maps (the kernel frees on last close)."""
        for attachment in reversed(self._attachments):
            bpf_calls.close_perf_event(attachment.fd)
            if attachment.kind != "tracepoint":
                bpf_calls.detach_probe_event(attachment.kind, attachment.event_name)
        self._attachments.clear()
        for ring in self._rings:
            ring.close()
        self._rings.clear()
        preloaded: list[int] = []  # never asked for: loaded, or still in the verifier
        for loading in self._loading.values():
            if not loading.cancel():
                with contextlib.suppress(OSError):
                    preloaded.append(loading.result())
        self._loading.clear()
        for fd in [*preloaded, *self._programs.values(), *self.map_fds.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._programs.clear()
        self.map_fds.clear()


def syscall_function(syscall: str) -> str:
    """The kernel function behind a syscall (for kprobes), named as this kernel names it."""
    return f"{_syscall_prefix()}{syscall}"


@cache
def _syscall_prefix() -> str:
    wanted = {f"{prefix}bpf": prefix for prefix in SYSCALL_PREFIXES}
    with contextlib.suppress(OSError), open("/proc/kallsyms") as symbols:
        for line in symbols:
            fields = line.split()
            if len(fields) >= 3 and fields[2] in wanted:
                return wanted[fields[2]]
    return "sys_"
