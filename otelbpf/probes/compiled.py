"""The compiled BPF object: built once per kernel and source, in a child process, then cached.

bcc compiles bpf/agent.c with clang and LLVM at run time: 2.2 s of the agent's start and,
while it runs, about 80 MiB of the agent's memory, which the C library does not give back.
So the compile runs in a child process (`python -m otelbpf.probes.compiled`), which hands
back the finished bytecode of every program and the description of every map, and exits,
taking the compiler's memory with it. The result is kept in the cache folder, keyed by
everything it depends on (the BPF sources, the defines, the kernel, bcc's version), so the
next start skips the compile. The parent loads it with objects.py, which needs only the
kernel's BPF calls.

What bcc's bytecode holds that belongs to one process is the file descriptor of each map it
uses (the ld_imm64 instructions marked BPF_PSEUDO_MAP_FD). The child records which map each
such instruction names and zeroes the number; the loader writes its own map's descriptor
there.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import logging
import os
import platform
import resource
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from otelbpf.abi import AGENT_SOURCE, BPF_DIR
from otelbpf.config import OTELBPF_CACHE_DIR
from otelbpf.errors import SetupError

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the cached file's shape changes
DEFAULT_CACHE_DIR = Path("/var/cache/otelbpf")
BCC_LIBRARY = Path("/usr/lib") / f"{platform.machine()}-linux-gnu" / "libbcc.so.0"

INSTRUCTION_SIZE = 8
LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW: two instruction slots
PSEUDO_MAP_FD = 1  # src_reg of an ld_imm64 whose immediate is a map's descriptor


@dataclass(frozen=True)
class MapSpec:
    name: str
    kind: int  # enum bpf_map_type
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class ProgramCode:
    name: str
    code: bytes  # instructions, with every map descriptor zeroed
    map_slots: tuple[tuple[int, str], ...]  # (instruction index, map name) to fill in at load

    def with_map_fds(self, fds: dict[str, int]) -> bytes:
        code = bytearray(self.code)
        for index, map_name in self.map_slots:
            struct.pack_into("=i", code, index * INSTRUCTION_SIZE + 4, fds[map_name])
        return bytes(code)


@dataclass(frozen=True)
class CompiledObject:
    maps: tuple[MapSpec, ...]
    programs: dict[str, ProgramCode]
    license: str
    kernel_version: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "license": self.license,
                "kernel_version": self.kernel_version,
                "maps": [vars(spec) for spec in self.maps],
                "programs": {
                    name: {
                        "code": base64.b64encode(program.code).decode(),
                        "map_slots": program.map_slots,
                    }
                    for name, program in self.programs.items()
                },
            }
        )

    @classmethod
    def from_json(cls, text: str) -> CompiledObject:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"cache format {data.get('format')}, expected {FORMAT}")
        return cls(
            maps=tuple(MapSpec(**spec) for spec in data["maps"]),
            programs={
                name: ProgramCode(
                    name,
                    base64.b64decode(program["code"]),
                    tuple((int(index), str(map_name)) for index, map_name in program["map_slots"]),
                )
                for name, program in data["programs"].items()
            },
            license=data["license"],
            kernel_version=int(data["kernel_version"]),
        )


# ------------------------------------------------------------------ the cache


def cache_dir() -> Path:
    return Path(os.environ.get(OTELBPF_CACHE_DIR) or DEFAULT_CACHE_DIR) / "programs"


def cache_key(cflags: list[str]) -> str:
    """Everything the bytecode depends on: sources, defines, kernel, headers and bcc."""
    digest = hashlib.sha256(f"format {FORMAT}\n".encode())
    for source in sorted(BPF_DIR.iterdir()):
        if source.suffix in (".c", ".h"):
            digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    digest.update("\0".join(cflags).encode())
    uname = os.uname()
    digest.update(f"\0{uname.release}\0{uname.version}\0{uname.machine}".encode())
    digest.update(os.environ.get("BCC_KERNEL_SOURCE", "").encode())
    digest.update(os.path.realpath(BCC_LIBRARY).encode())  # libbcc.so.0.26.0: bcc's version
    return digest.hexdigest()[:32]


def cache_path(cflags: list[str]) -> Path:
    return cache_dir() / f"{cache_key(cflags)}.json"


def load_or_compile(cflags: list[str]) -> tuple[CompiledObject, bool]:
    """The compiled object for these defines, and whether it came from the cache."""
    path = cache_path(cflags)
    try:
        program = CompiledObject.from_json(path.read_text())
        log.info("BPF programs from the cache: %s", path)
        return program, True
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as error:  # damaged: compile anew
        log.warning("compiled-program cache %s is unreadable (%s); compiling again", path, error)
    compiled = compile_in_child(cflags)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as out:
            out.write(compiled.to_json())
        os.replace(out.name, path)
        log.info("cached the compiled programs in %s", path)
    except OSError as error:  # a read-only cache costs the next start a compile, nothing else
        log.warning("cannot cache the compiled programs in %s: %s", path.parent, error)
    return compiled, False


def compile_in_child(cflags: list[str]) -> CompiledObject:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="otelbpf-compile-") as work:
        out = Path(work) / "compiled.json"
        result = subprocess.run(
            [sys.executable, "-m", "otelbpf.probes.compiled", str(out), *cflags],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": _package_root()},
        )
        text = out.read_text() if result.returncode == 0 and out.exists() else None
    if text is None:
        raise SetupError(
            f"bcc could not compile {AGENT_SOURCE}: {result.stderr.strip()[-3000:]}",
            "check that kernel headers are installed (see the README's set-up command) and "
            "that BCC_KERNEL_SOURCE, if set, points at a headers tree",
        )
    compiled = CompiledObject.from_json(text)
    # the compiler's memory was the child's: its peak, for the record (the agent never holds it)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >> 10
    log.info(
        "compiled %d BPF programs in %.2fs in a child process (its peak RSS: %d MiB)",
        len(compiled.programs),
        time.monotonic() - started,
        peak_mib,
    )
    return compiled


def _package_root() -> str:
    root = str(Path(__file__).resolve().parents[2])
    existing = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{existing}" if existing else root


# ------------------------------------------------------------------ the child


def compile_with_bcc(cflags: list[str]) -> object:
    """bcc's BPF object for bpf/agent.c (the child's work; tests use it to check the ABI)."""
    from otelbpf.preflight import import_bcc

    bcc = import_bcc()
    return bcc.BPF(src_file=str(AGENT_SOURCE).encode(), cflags=cflags)


def extract(bpf: object) -> CompiledObject:
    """Maps and finished bytecode out of a bcc BPF object, map descriptors made symbolic."""
    from bcc import lib  # bcc's own binding of libbcc.so; it declares all but these

    module_and_index = [ctypes.c_void_p, ctypes.c_ulonglong]
    for name, restype, argtypes in (
        ("bpf_num_tables", ctypes.c_ulonglong, [ctypes.c_void_p]),
        ("bpf_table_name", ctypes.c_char_p, module_and_index),
        ("bpf_table_fd_id", ctypes.c_int, module_and_index),
        ("bpf_table_key_size_id", ctypes.c_size_t, module_and_index),
        ("bpf_table_leaf_size_id", ctypes.c_size_t, module_and_index),
    ):
        getattr(lib, name).restype = restype
        getattr(lib, name).argtypes = argtypes
    module = ctypes.c_void_p(bpf.module)  # type: ignore[attr-defined]
    maps: list[MapSpec] = []
    names_by_fd: dict[int, str] = {}
    for index in range(lib.bpf_num_tables(module)):
        i = ctypes.c_ulonglong(index)
        name = lib.bpf_table_name(module, i).decode()
        names_by_fd[lib.bpf_table_fd_id(module, i)] = name
        maps.append(
            MapSpec(
                name,
                lib.bpf_table_type_id(module, i),
                lib.bpf_table_key_size_id(module, i),
                lib.bpf_table_leaf_size_id(module, i),
                lib.bpf_table_max_entries_id(module, i),
                lib.bpf_table_flags_id(module, i),
            )
        )
    programs: dict[str, ProgramCode] = {}
    for index in range(lib.bpf_num_functions(module)):
        name = lib.bpf_function_name(module, ctypes.c_ulonglong(index))
        start = lib.bpf_function_start(module, name)
        size = lib.bpf_function_size(module, name)
        programs[name.decode()] = _symbolic(
            name.decode(), ctypes.string_at(start, size), names_by_fd
        )
    return CompiledObject(
        tuple(maps),
        programs,
        lib.bpf_module_license(module).decode(),
        lib.bpf_module_kern_version(module),
    )


def _symbolic(name: str, code: bytes, names_by_fd: dict[int, str]) -> ProgramCode:
    mutable = bytearray(code)
    slots: list[tuple[int, str]] = []
    for index in range(len(code) // INSTRUCTION_SIZE):
        offset = index * INSTRUCTION_SIZE
        if mutable[offset] == LD_IMM64 and mutable[offset + 1] >> 4 == PSEUDO_MAP_FD:
            (fd,) = struct.unpack_from("=i", mutable, offset + 4)
            if fd not in names_by_fd:
                raise ValueError(f"{name}: instruction {index} names fd {fd}, which is no map")
            slots.append((index, names_by_fd[fd]))
            struct.pack_into("=i", mutable, offset + 4, 0)
    return ProgramCode(name, bytes(mutable), tuple(slots))


def main(out: str, cflags: list[str]) -> int:
    # clang's diagnostics go to stderr, which the parent shows if the compile fails
    Path(out).write_text(extract(compile_with_bcc(cflags)).to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
