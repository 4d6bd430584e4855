"""Struct offsets from the running kernel's BTF (otelbpf.probes.kernel_layout).

The offsets are the kernel's own: what can be checked in user space is that the walk through
named and anonymous members agrees with itself, with the layout sock_common has kept since
Linux 2.6 (the address pair first, then the hash, then the port pair), and that a kernel
without the information gives no defines and a clear warning rather than a wrong offset. That
the BPF program reads the right bytes with them is the end-to-end test of an accept without
address buffer (tests/e2e/test_http_python.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from otelbpf.probes import kernel_layout
from otelbpf.probes.kernel_layout import KernelTypes, LayoutError

pytestmark = pytest.mark.skipif(
    not Path("/sys/kernel/btf/vmlinux").exists(), reason="this kernel publishes no BTF"
)


@pytest.fixture
def types():
    with KernelTypes() as loaded:
        yield loaded


def test_every_offset_is_found_inside_its_struct(types):
    offsets = kernel_layout.socket_offsets()
    assert set(offsets) == set(kernel_layout.MEMBERS)
    for define, (struct_name, path) in kernel_layout.MEMBERS.items():
        # a pointer, or a field of at most 16 bytes (an IPv6 address), fits in its struct
        size = types.size(struct_name)
        assert 0 <= offsets[define] <= size - 2, (define, struct_name, path, size)
    # the walk's pointers are 8-byte aligned, as the kernel lays them out
    pointers = ("OFF_TASK_FILES", "OFF_FILES_FDT", "OFF_FDT_FD", "OFF_FILE_PRIVATE_DATA")
    for define in (*pointers, "OFF_SOCKET_SK"):
        assert offsets[define] % 8 == 0, define


def test_sock_common_keeps_its_address_and_port_pairs(types):
    offsets = kernel_layout.socket_offsets()
    # union { skc_addrpair; struct { skc_daddr; skc_rcv_saddr; } } opens sock_common
    assert types.offset("sock", "__sk_common") == 0
    assert offsets["OFF_SK_DADDR"] == 0
    assert offsets["OFF_SK_RCV_SADDR"] == 4
    # union { skc_portpair; struct { skc_dport; skc_num; } }: two 16-bit halves of one word
    assert offsets["OFF_SK_NUM"] == offsets["OFF_SK_DPORT"] + 2
    assert offsets["OFF_SK_DPORT"] % 4 == 0
    assert offsets["OFF_SK_V6_RCV_SADDR"] == offsets["OFF_SK_V6_DADDR"] + 16


def test_a_path_through_a_named_member_adds_its_offset(types):
    inner = types.offset("sock_common", "skc_family")
    assert (
        types.offset("sock", "__sk_common.skc_family")
        == types.offset("sock", "__sk_common") + inner
    )


def test_anonymous_members_are_searched(types):
    # skc_dport sits in an anonymous struct inside an anonymous union of sock_common
    assert (
        types.offset("sock_common", "skc_dport") == kernel_layout.socket_offsets()["OFF_SK_DPORT"]
    )


def test_a_missing_member_or_struct_is_named(types):
    with pytest.raises(LayoutError, match="struct sock has no member __sk_common.no_such_field"):
        types.offset("sock", "__sk_common.no_such_field")
    with pytest.raises(LayoutError, match="struct no_such_struct_otelbpf is not in"):
        types.offset("no_such_struct_otelbpf", "x")


def test_without_libbpf_no_defines_and_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(kernel_layout, "LIBBPF", "libno-such-libbpf.so.9")
    kernel_layout.cflags.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=kernel_layout.__name__):
            assert kernel_layout.cflags() == ()
    finally:
        kernel_layout.cflags.cache_clear()
    assert "socket addresses will be read from /proc" in caplog.text
    assert "libno-such-libbpf.so.9" in caplog.text


def test_with_btf_the_feature_define_and_every_offset(types):
    defines = kernel_layout.cflags()
    assert defines[0] == f"-D{kernel_layout.FEATURE_DEFINE}=1"
    assert {d.split("=")[0][2:] for d in defines[1:]} == set(kernel_layout.MEMBERS)
