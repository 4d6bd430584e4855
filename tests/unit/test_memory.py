"""Which mappings the agent pages out after the compile: the compiler's read-only ones; and
that paging out a real read-only file mapping keeps its contents."""

from __future__ import annotations

import ctypes
import mmap
import os

from otelbpf import memory

MAPS = """\
55d0c0000000-55d0c0021000 r--p 00000000 08:01 1 /usr/bin/python3.11
7f0000000000-7f0001000000 r--p 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
7f0001000000-7f0003000000 r-xp 01000000 08:01 2 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
7f0003000000-7f0003100000 rw-p 03000000 08:01 2 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
7f0004000000-7f0004800000 r-xp 00000000 08:01 3 /usr/lib/llvm-14/lib/libclang-cpp.so.14
7f0005000000-7f0005001000 r-xp 00000000 08:01 4 /usr/lib/x86_64-linux-gnu/libbcc.so.0.26.0
7f0006000000-7f0006021000 rw-p 00000000 00:00 0
7f0007000000-7f0007001000 r--p 00000000 08:01 5 /opt/libLLVM-dir/libc.so.6
"""


def test_only_read_only_compiler_mappings_are_chosen() -> None:
    assert memory.compiler_mappings(MAPS) == [
        (0x7F0000000000, 0x1000000),
        (0x7F0001000000, 0x2000000),
        (0x7F0004000000, 0x800000),
    ]  # never libLLVM's written data, never bcc, anonymous memory or other files


def test_a_paged_out_read_only_file_mapping_keeps_its_contents(tmp_path) -> None:  # noqa: ANN001
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    )
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    size = 8 * mmap.PAGESIZE
    library = tmp_path / "libLLVM-9.so"
    library.write_bytes(os.urandom(size))
    fd = os.open(library, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, 0)
        assert address not in (None, ctypes.c_void_p(-1).value)
        before = ctypes.string_at(address, size)
        assert before == library.read_bytes()
        maps = f"{address:x}-{address + size:x} r--p 00000000 08:01 9 {library}\n"
        assert memory.release_compiler_memory(maps) == size
        assert ctypes.string_at(address, size) == before  # faulted back in from the file
        libc.munmap(address, size)
    finally:
        os.close(fd)
