"""TLS library discovery: which TLS stacks a process uses and where their hooks go.

Reads /proc/PID/maps and the ELF files themselves (pyelftools): shared OpenSSL/BoringSSL and
GnuTLS libraries, OpenSSL linked into the executable (Node.js), and Go's crypto/tls, whose
returns are reached through the offsets of each RET instruction (found with capstone). Knows
nothing of bcc: probes/tls.py attaches what this module describes, once per file.
"""

from __future__ import annotations

import enum
import logging
import os
import platform
import re
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.hash import ELFHashSection, GNUHashSection

log = logging.getLogger(__name__)


class TlsStack(enum.Enum):
    OPENSSL = "openssl"  # OpenSSL 1.1/3 and BoringSSL share the SSL_* API
    GNUTLS = "gnutls"
    GO = "go"


class HookKind(enum.Enum):
    ENTRY = "entry"  # a uprobe at the symbol
    RETURN = "return"  # a uretprobe on the symbol (C libraries only)
    OFFSET = "offset"  # a uprobe at symbol + offset (a Go function's RET instruction)


@dataclass(frozen=True)
class Hook:
    symbol: str
    program: str  # the BPF function in bpf/tls.c
    kind: HookKind
    offset: int = 0


@dataclass(frozen=True)
class TlsLibrary:
    path: str  # reachable from the agent (through /proc/PID/root for other mount namespaces)
    file_id: tuple[int, int]  # (st_dev, st_ino): one attachment per file, whoever maps it
    stack: TlsStack
    hooks: tuple[Hook, ...]
    detail: str = ""  # e.g. "go1.19.8", or why something could not be hooked

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


# symbol -> entry program; every C hook also gets uretprobe_tls on return
OPENSSL_SYMBOLS = {
    "SSL_read": "uprobe_ssl_read",
    "SSL_write": "uprobe_ssl_write",
    "SSL_read_ex": "uprobe_ssl_read_ex",
    "SSL_write_ex": "uprobe_ssl_write_ex",
}
GNUTLS_SYMBOLS = {
    "gnutls_record_recv": "uprobe_gnutls_recv",
    "gnutls_record_send": "uprobe_gnutls_send",
}
C_RETURN_PROGRAM = "uretprobe_tls"
GO_SYMBOLS = {
    "crypto/tls.(*Conn).Read": "uprobe_go_tls_read",
    "crypto/tls.(*Conn).Write": "uprobe_go_tls_write",
}
GO_RETURN_PROGRAM = "uprobe_go_tls_return"
GO_MIN_REGISTER_ABI = (1, 17)

_OPENSSL_FILE = re.compile(r"^lib(ssl|boringssl)[.-]")
_GNUTLS_FILE = re.compile(r"^libgnutls\.so")
_GO_VERSION = re.compile(rb"go(\d+)\.(\d+)(?:\.\d+)?")


def _symbols(elf: ELFFile, names: set[str], exported: bool = True) -> dict[str, tuple[int, int]]:
    """name -> (value, size) for the names defined in the file; hash tables first (fast).

    exported: the names are exported functions (the C libraries' API), which the dynamic
    symbol hash tables answer for. Go's functions live only in .symtab.
    """
    found: dict[str, tuple[int, int]] = {}
    hashed = False
    for section in elf.iter_sections():
        if isinstance(section, GNUHashSection | ELFHashSection):
            hashed = True
            for name in names - found.keys():
                symbol = section.get_symbol(name)
                if symbol is not None and symbol["st_value"]:
                    found[name] = (symbol["st_value"], symbol["st_size"])
    if hashed and exported:
        # what the hash table lacks is not exported: iterating every symbol in Python would
        # cost 100 ms on a binary like curl, for nothing
        return found
    for section_name in (".dynsym", ".symtab"):
        section = elf.get_section_by_name(section_name)
        if section is None or not hasattr(section, "iter_symbols"):
            continue
        for symbol in section.iter_symbols():
            if symbol.name in names and symbol["st_value"] and symbol.name not in found:
                found[symbol.name] = (symbol["st_value"], symbol["st_size"])
                if found.keys() == names:
                    return found
    return found


def _c_hooks(symbols: dict[str, tuple[int, int]], table: dict[str, str]) -> tuple[Hook, ...]:
    hooks: list[Hook] = []
    for symbol, program in table.items():
        if symbol in symbols:
            hooks.append(Hook(symbol, program, HookKind.ENTRY))
            hooks.append(Hook(symbol, C_RETURN_PROGRAM, HookKind.RETURN))
    return tuple(hooks)


def go_version(elf: ELFFile) -> tuple[int, int] | None:
    section = elf.get_section_by_name(".go.buildinfo")
    if section is None:
        return None
    match = _GO_VERSION.search(section.data()[:512])
    return (int(match.group(1)), int(match.group(2))) if match else None


def ret_offsets(elf: ELFFile, value: int, size: int) -> list[int]:
    """Offsets of the RET instructions in the function at virtual address value."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    from capstone.x86 import X86_INS_RET

    for section in elf.iter_sections():
        start = section["sh_addr"]
        if section["sh_type"] == "SHT_PROGBITS" and start <= value < start + section["sh_size"]:
            stream = section.stream
            stream.seek(section["sh_offset"] + value - start)
            code = stream.read(size)
            disassembler = Cs(CS_ARCH_X86, CS_MODE_64)
            return [i.address for i in disassembler.disasm(code, 0) if i.id == X86_INS_RET]
    return []


def _go_hooks(elf: ELFFile) -> tuple[tuple[Hook, ...], str]:
    version = go_version(elf)
    detail = f"go{version[0]}.{version[1]}" if version else "go (version unknown)"
    if platform.machine() != "x86_64":
        return (), f"{detail}: Go TLS hooks are built for x86_64 only"
    if version is not None and version < GO_MIN_REGISTER_ABI:
        return (), f"{detail}: before Go 1.17's register ABI, not hooked"
    symbols = _symbols(elf, set(GO_SYMBOLS), exported=False)
    hooks: list[Hook] = []
    for symbol, program in GO_SYMBOLS.items():
        if symbol not in symbols:
            continue
        value, size = symbols[symbol]
        offsets = ret_offsets(elf, value, size)
        if not offsets:
            continue
        hooks.append(Hook(symbol, program, HookKind.ENTRY))
        hooks.extend(Hook(symbol, GO_RETURN_PROGRAM, HookKind.OFFSET, off) for off in offsets)
    return tuple(hooks), detail


_inspected: dict[tuple[int, int], TlsLibrary | None] = {}


def inspect_file(path: str, file_id: tuple[int, int]) -> TlsLibrary | None:
    """Hooks for one ELF file, read once per file identity whatever path reaches it."""
    if file_id not in _inspected:
        if len(_inspected) > 4096:
            _inspected.clear()
        _inspected[file_id] = _inspect(path, file_id)
    return _inspected[file_id]


def _inspect(path: str, file_id: tuple[int, int]) -> TlsLibrary | None:
    name = os.path.basename(path)
    try:
        with open(path, "rb") as file:
            elf = ELFFile(file)
            if _GNUTLS_FILE.match(name):
                hooks = _c_hooks(_symbols(elf, set(GNUTLS_SYMBOLS)), GNUTLS_SYMBOLS)
                return TlsLibrary(path, file_id, TlsStack.GNUTLS, hooks) if hooks else None
            if _OPENSSL_FILE.match(name):
                hooks = _c_hooks(_symbols(elf, set(OPENSSL_SYMBOLS)), OPENSSL_SYMBOLS)
                return TlsLibrary(path, file_id, TlsStack.OPENSSL, hooks) if hooks else None
            # an executable: OpenSSL linked in (Node.js), or Go's crypto/tls
            if elf.get_section_by_name(".go.buildinfo") is not None:
                hooks, detail = _go_hooks(elf)
                if hooks or _symbols(elf, {"crypto/tls.(*Conn).Write"}, exported=False):
                    return TlsLibrary(path, file_id, TlsStack.GO, hooks, detail)
                return None
            hooks = _c_hooks(_symbols(elf, set(OPENSSL_SYMBOLS)), OPENSSL_SYMBOLS)
            if hooks:
                detail = "linked into the executable"
                return TlsLibrary(path, file_id, TlsStack.OPENSSL, hooks, detail)
    except (OSError, ELFError, ValueError) as error:
        log.debug("cannot read %s: %s", path, error)
    return None


def _mapped_files(pid: int) -> list[str]:
    """Executable file mappings of pid, as paths inside its mount namespace."""
    paths: list[str] = []
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and "x" in fields[1] and fields[5].startswith("/"):
                    path = fields[5].rstrip("\n")
                    if path not in paths and not path.endswith(" (deleted)"):
                        paths.append(path)
    except OSError:
        pass
    return paths


# The dynamic loaders (glibc's, musl's): their _dl_debug_state() tells of libraries loaded
# later, where no mmap() is hooked (probes/loader.py).
_LOADER_FILE = re.compile(r"^ld-(linux|musl)[-\w.]*\.so|^ld-\d[\d.]*\.so$")  # ld-2.31.so
LOADER_PATTERNS = ("ld-linux*.so*", "ld-musl*.so*")


def loaders_of(pid: int) -> list[tuple[str, tuple[int, int]]]:
    """The dynamic loader process pid runs under, as (reachable path, file id): none for a
    static executable."""
    found = []
    for path in _mapped_files(pid):
        if _LOADER_FILE.match(os.path.basename(path)):
            reachable = f"/proc/{pid}/root{path}"
            try:
                stat = os.stat(reachable)
            except OSError:
                continue
            found.append((reachable, (stat.st_dev, stat.st_ino)))
    return found


def libraries_of(pid: int) -> list[TlsLibrary]:
    """The TLS stacks process pid has mapped now, with their hooks."""
    found: list[TlsLibrary] = []
    for path in _mapped_files(pid):
        name = os.path.basename(path)
        candidate = _OPENSSL_FILE.match(name) or _GNUTLS_FILE.match(name)
        is_exe = False
        if not candidate:
            try:
                is_exe = os.path.samefile(f"/proc/{pid}/exe", f"/proc/{pid}/root{path}")
            except OSError:
                is_exe = False
        if not (candidate or is_exe):
            continue
        reachable = f"/proc/{pid}/root{path}"
        try:
            stat = os.stat(reachable)
        except OSError:
            continue
        library = inspect_file(reachable, (stat.st_dev, stat.st_ino))
        if library is not None:
            found.append(library)
    return found
