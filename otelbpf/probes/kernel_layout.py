"""Where this kernel keeps a socket's addresses: struct offsets read from its BTF, as defines.

A server that accepts with no address buffer (`accept(fd, NULL, NULL)`: libuv, so Node.js)
tells the system call nothing about its peer. The BPF program can still read the addresses
from the kernel's socket, through the calling task's descriptor table:

    task_struct.files -> files_struct.fdt -> fdtable.fd[fd] -> file.private_data (a socket)
        -> socket.sk -> sock_common.skc_{family, daddr, rcv_saddr, dport, num, v6_*}

Those offsets differ between kernel builds, so they are not compiled from headers (the headers
bcc is given may be another version's): they come from the running kernel's own type
information, /sys/kernel/btf/vmlinux, read with libbpf (bcc already depends on it: 10-40 ms, once
per start), and join the compile's defines, so the compiled-object cache is keyed by them too.
Without BTF, or with a kernel that renamed one of these members, no define is set and the agent
falls back to reading the addresses from /proc while the connection lives (AddressBook in
connections.py).
"""

from __future__ import annotations

import ctypes
import functools
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

LIBBPF = "libbpf.so.1"

# BTF kinds (include/uapi/linux/btf.h)
KIND_STRUCT = 4
KIND_UNION = 5
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_TYPE_TAG = 18
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)

# define name -> (struct, member path); a path may pass through named and anonymous members
MEMBERS: dict[str, tuple[str, str]] = {
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FDT_MAX_FDS": ("fdtable", "max_fds"),
    "OFF_FDT_FD": ("fdtable", "fd"),
    "OFF_FILE_PRIVATE_DATA": ("file", "private_data"),
    "OFF_SOCKET_SK": ("socket", "sk"),
    "OFF_SK_FAMILY": ("sock", "__sk_common.skc_family"),
    "OFF_SK_DADDR": ("sock", "__sk_common.skc_daddr"),
    "OFF_SK_RCV_SADDR": ("sock", "__sk_common.skc_rcv_saddr"),
    "OFF_SK_DPORT": ("sock", "__sk_common.skc_dport"),
    "OFF_SK_NUM": ("sock", "__sk_common.skc_num"),
    "OFF_SK_V6_DADDR": ("sock", "__sk_common.skc_v6_daddr"),
    "OFF_SK_V6_RCV_SADDR": ("sock", "__sk_common.skc_v6_rcv_saddr"),
}
FEATURE_DEFINE = "SOCK_OFFSETS"  # set when every offset above is known


class _BtfType(ctypes.Structure):  # struct btf_type
    _fields_ = [
        ("name_off", ctypes.c_uint32),
        ("info", ctypes.c_uint32),
        ("size_or_type", ctypes.c_uint32),
    ]


class _BtfMember(ctypes.Structure):  # struct btf_member, vlen of them follow a struct's btf_type
    _fields_ = [
        ("name_off", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("offset", ctypes.c_uint32),
    ]


class LayoutError(Exception):
    """The kernel's BTF lacks a struct or member, or places it where bytes cannot be read."""


@dataclass(frozen=True)
class _Type:
    kind: int
    kind_flag: bool
    vlen: int
    address: int


class KernelTypes:
    """The running kernel's BTF, through libbpf: struct member offsets by name."""

    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL(LIBBPF, use_errno=True)
        except OSError as error:
            raise LayoutError(f"{LIBBPF} is not available: {error}") from None
        lib.btf__load_vmlinux_btf.restype = ctypes.c_void_p
        lib.btf__find_by_name_kind.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
        lib.btf__find_by_name_kind.restype = ctypes.c_int32
        lib.btf__type_by_id.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.btf__type_by_id.restype = ctypes.c_void_p
        lib.btf__name_by_offset.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.btf__name_by_offset.restype = ctypes.c_char_p
        lib.btf__free.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._btf = lib.btf__load_vmlinux_btf()
        if not self._btf:  # libbpf returns NULL and sets errno (no /sys/kernel/btf/vmlinux)
            raise LayoutError(f"the kernel's BTF could not be loaded (errno {ctypes.get_errno()})")

    def close(self) -> None:
        if self._btf:
            self._lib.btf__free(self._btf)
            self._btf = None

    def __enter__(self) -> KernelTypes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def size(self, struct_name: str) -> int:
        """The struct's size in bytes."""
        found = self._resolved(self._struct_id(struct_name))
        return _BtfType.from_address(found.address).size_or_type

    def _struct_id(self, struct_name: str) -> int:
        type_id = self._lib.btf__find_by_name_kind(self._btf, struct_name.encode(), KIND_STRUCT)
        if type_id <= 0:
            raise LayoutError(f"struct {struct_name} is not in the kernel's BTF")
        return type_id

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of `path` (members joined by dots) inside struct `struct_name`."""
        type_id = self._struct_id(struct_name)
        total_bits = 0
        for name in path.split("."):
            found = self._member(type_id, name)
            if found is None:
                raise LayoutError(f"struct {struct_name} has no member {path}")
            bits, type_id = found
            total_bits += bits
        if total_bits % 8:
            raise LayoutError(f"{struct_name}.{path} is a bit field")
        return total_bits // 8

    def _member(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of member `name`, searching anonymous members too."""
        composite = self._resolved(type_id)
        if composite.kind not in (KIND_STRUCT, KIND_UNION):
            return None
        members = (_BtfMember * composite.vlen).from_address(
            composite.address + ctypes.sizeof(_BtfType)
        )
        for member in members:
            # with kind_flag, the top 8 bits are a bit field's size and the rest its offset
            bits = member.offset & 0xFFFFFF if composite.kind_flag else member.offset
            if composite.kind_flag and member.offset >> 24:
                continue  # a bit field: never one of ours
            if member.name_off:
                if self._lib.btf__name_by_offset(self._btf, member.name_off) == name.encode():
                    return bits, member.type
            else:  # an anonymous struct or union: its members are the parent's
                inner = self._member(member.type, name)
                if inner is not None:
                    return bits + inner[0], inner[1]
        return None

    def _resolved(self, type_id: int) -> _Type:
        """The type behind typedefs and qualifiers."""
        for _ in range(32):
            address = self._lib.btf__type_by_id(self._btf, type_id)
            if not address:
                raise LayoutError(f"BTF type {type_id} does not exist")
            raw = _BtfType.from_address(address)
            kind = (raw.info >> 24) & 0x1F
            if kind not in _MODIFIERS:
                return _Type(kind, bool(raw.info >> 31), raw.info & 0xFFFF, address)
            type_id = raw.size_or_type
        raise LayoutError(f"BTF type {type_id}: too many typedefs")


def socket_offsets() -> dict[str, int]:
    """Every offset of MEMBERS; LayoutError if one cannot be found."""
    with KernelTypes() as types:
        return {define: types.offset(*where) for define, where in MEMBERS.items()}


@functools.cache
def cflags() -> tuple[str, ...]:
    """The defines that let agent.c read a socket's addresses; none when BTF does not say."""
    try:
        offsets = socket_offsets()
    except LayoutError as error:
        log.warning(
            "socket addresses will be read from /proc, not the kernel (%s): a server "
            "that accepts without an address buffer (Node.js) may lose the client's "
            "address of a connection that closes quickly",
            error,
        )
        return ()
    return (f"-D{FEATURE_DEFINE}=1", *(f"-D{name}={value}" for name, value in offsets.items()))
