"""TLS library discovery on the real files of this machine, and the TLS classification."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otelbpf import tlslibs
from otelbpf.protocols.classify import is_tls_handshake, is_tls_record
from otelbpf.tlslibs import HookKind, TlsStack


def _libssl() -> Path:
    for directory in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64"):
        for path in sorted(Path(directory).glob("libssl.so.*")):
            return path.resolve()
    pytest.fail("libssl is part of every Debian system (python3's ssl module needs it)")


def _inspect(path: Path) -> tlslibs.TlsLibrary | None:
    stat = path.stat()
    return tlslibs.inspect_file(str(path), (stat.st_dev, stat.st_ino))


def test_shared_openssl_gets_entry_and_return_hooks_for_each_function():
    library = _inspect(_libssl())
    assert library is not None and library.stack is TlsStack.OPENSSL
    entries = {h.symbol: h.program for h in library.hooks if h.kind is HookKind.ENTRY}
    assert entries == tlslibs.OPENSSL_SYMBOLS  # OpenSSL 3 has the _ex functions too
    returns = sorted(h.symbol for h in library.hooks if h.kind is HookKind.RETURN)
    assert returns == sorted(tlslibs.OPENSSL_SYMBOLS)
    assert {h.program for h in library.hooks if h.kind is HookKind.RETURN} == {"uretprobe_tls"}


def test_gnutls_library():
    path = next(Path("/usr/lib/x86_64-linux-gnu").glob("libgnutls.so.30*"), None)
    if path is None:
        pytest.fail("libgnutls30 is part of every Debian system (apt uses it)")
    library = _inspect(path.resolve())
    assert library is not None and library.stack is TlsStack.GNUTLS
    assert {h.symbol for h in library.hooks} == set(tlslibs.GNUTLS_SYMBOLS)


def test_openssl_linked_into_node():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is on this machine's image; ./setup.sh --test installs it elsewhere")
    library = _inspect(Path(node).resolve())
    assert library is not None and library.stack is TlsStack.OPENSSL
    assert library.detail == "linked into the executable"
    assert {h.symbol for h in library.hooks} == set(tlslibs.OPENSSL_SYMBOLS)


def test_a_file_without_tls_is_not_a_library():
    assert _inspect(Path(shutil.which("ls")).resolve()) is None


def test_python_maps_libssl_only_after_import_ssl():
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; sys.stdin.readline(); import ssl; print('ok', flush=True); "
            "sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        before = tlslibs.libraries_of(child.pid)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "ok"
        after = tlslibs.libraries_of(child.pid)
    finally:
        child.kill()
        child.wait()
    assert [lib.stack for lib in before] == []
    assert [lib.stack for lib in after] == [TlsStack.OPENSSL]
    assert after[0].path == f"/proc/{child.pid}/root{_libssl()}" or os.path.samefile(
        after[0].path, _libssl()
    )


def test_go_binary_hooks_every_ret(tmp_path):
    go = shutil.which("go")
    if go is None:
        pytest.fail("golang-go is installed by ./setup.sh --test")
    source = tmp_path / "main.go"
    source.write_text(
        'package main\nimport ("crypto/tls"; "fmt"; "io")\n'
        "func main() { var rw io.ReadWriter = tls.Client(nil, &tls.Config{}); "
        "fmt.Println(rw != nil) }\n"
    )
    env = {
        **os.environ,
        "GOCACHE": str(tmp_path / "cache"),
        "GOPATH": str(tmp_path / "gopath"),
        "GO111MODULE": "off",
    }
    subprocess.run(
        [go, "build", "-o", str(tmp_path / "app"), str(source)],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    library = _inspect(tmp_path / "app")
    assert library is not None and library.stack is TlsStack.GO
    assert library.detail.startswith("go1.")
    entries = {h.symbol: h.program for h in library.hooks if h.kind is HookKind.ENTRY}
    assert entries == tlslibs.GO_SYMBOLS
    rets = [h for h in library.hooks if h.kind is HookKind.OFFSET]
    assert {h.symbol for h in rets} == set(tlslibs.GO_SYMBOLS)
    assert all(h.program == tlslibs.GO_RETURN_PROGRAM and h.offset > 0 for h in rets)
    # each offset really is a RET (0xc3) in the file
    from elftools.elf.elffile import ELFFile

    with open(tmp_path / "app", "rb") as file:
        elf = ELFFile(file)
        symbols = tlslibs._symbols(elf, set(tlslibs.GO_SYMBOLS), exported=False)
        text = elf.get_section_by_name(".text")
        for hook in rets:
            address = symbols[hook.symbol][0] + hook.offset
            file.seek(text["sh_offset"] + address - text["sh_addr"])
            assert file.read(1) == b"\xc3"


@pytest.mark.parametrize(
    ("head", "record", "handshake"),
    [
        (b"\x16\x03\x01\x02\x00\x01", True, True),  # ClientHello
        (b"\x14\x03\x03\x00\x01\x01", True, True),  # change cipher spec (TLS 1.3 compat)
        (b"\x17\x03\x03\x00\x45", True, False),  # application data: not decrypted by us
        (b"\x15\x03\x03\x00\x02", True, False),  # alert
        (b"GET / HTTP/1.1\r\n", False, False),
        (b"\x16\x03", False, False),  # too short to tell
    ],
)
def test_tls_record_classification(head, record, handshake):
    assert is_tls_record(head) is record
    assert is_tls_handshake(head) is handshake


def test_the_status_says_hooked_only_where_uprobes_attached(tmp_path: Path) -> None:
    """`otelbpf coverage` says "yes" from the status's uprobe count: a library whose every
    uprobe failed (a verifier that refused the programs) must not count as hooked."""
    from dataclasses import dataclass, field

    from otelbpf.tlswatch import TlsWatcher

    @dataclass
    class Refused:
        hooks: int = 0
        errors: list[str] = field(default_factory=lambda: ["SSL_read+0: Invalid argument"])

    @dataclass
    class Attached:
        hooks: int = 4
        errors: list[str] = field(default_factory=list)

    libssl = str(_libssl())
    refuse = TlsWatcher(lambda _library, _pid: Refused(), status_path=tmp_path / "a.json")
    accept = TlsWatcher(lambda _library, _pid: Attached(), status_path=tmp_path / "b.json")
    off = TlsWatcher(None, status_path=tmp_path / "c.json")
    for watcher in (refuse, accept, off):
        assert watcher.hook_system_libraries() >= 1
    by_watcher = [
        {lib["path"]: lib for lib in w.status()["libraries"]}[libssl] for w in (refuse, accept, off)
    ]
    assert [(lib["uprobes"], lib["uprobe_errors"]) for lib in by_watcher] == [
        (0, ["SSL_read+0: Invalid argument"]),
        (4, []),
        (0, []),
    ]
