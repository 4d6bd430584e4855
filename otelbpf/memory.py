"""Start-up's leftovers given back: memory the agent needs only while bcc compiles.

bcc compiles the BPF program with an in-process clang/LLVM. After the compile, two things
stay resident though tracing never touches them again:
- the heap clang freed, which glibc keeps (malloc_trim hands it back);
- the pages of libLLVM and libclang-cpp that the compile read: 82 MiB of the agent's
  174 MiB RSS on this machine. They are file-backed and clean, so madvise(MADV_PAGEOUT)
  reclaims them; should bcc ever need them again, they fault back in from the file.
Only read-only mappings are touched: a written page of a library is the process's state.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os

log = logging.getLogger(__name__)

MADV_PAGEOUT = 21  # Linux 5.4+; older kernels answer EINVAL and keep the pages
COMPILER_LIBRARIES = ("libLLVM", "libclang")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6", use_errno=True)


def compiler_mappings(maps_text: str) -> list[tuple[int, int]]:
    """(start, length) of the compiler libraries' read-only mappings in a /proc/PID/maps."""
    found = []
    for line in maps_text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or "w" in fields[1]:
            continue
        name = os.path.basename(fields[5])
        if not name.startswith(COMPILER_LIBRARIES):
            continue
        start, end = (int(part, 16) for part in fields[0].split("-"))
        found.append((start, end - start))
    return found


def release_compiler_memory(maps_text: str | None = None) -> int:
    """Give back clang's freed heap and page out the compiler's code; returns bytes advised.

    maps_text: the process's /proc/self/maps (read here when not given)."""
    libc = _libc()
    with contextlib.suppress(AttributeError):
        libc.malloc_trim(0)
    if maps_text is None:
        try:
            with open("/proc/self/maps") as maps:
                maps_text = maps.read()
        except OSError:
            return 0
    mappings = compiler_mappings(maps_text)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    advised = 0
    for start, length in mappings:
        if libc.madvise(start, length, MADV_PAGEOUT) == 0:
            advised += length
        else:
            log.debug("madvise(MADV_PAGEOUT) refused: %s", os.strerror(ctypes.get_errno()))
            break  # the same answer for every mapping: an older kernel
    return advised
