"""The ctypes mirror in otelbpf/abi.py matches the C in bpf/otelbpf.h, and the BPF programs load.

bpf/agent.c is compiled with bcc exactly as the agent's compile child compiles it
(otelbpf.probes.compiled.compile_with_bcc). bcc builds ctypes types for every map's key and
value from clang's own record layout, so comparing those with the hand-written mirror checks
each size and offset against the compiler. Every program is then loaded, which runs the
kernel's verifier over it (nothing is attached), both by bcc and, from the extracted object
the cache holds, by the agent's own loader.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from otelbpf import abi, preflight, tlslibs
from otelbpf.abi import AbiLayout
from otelbpf.probes.loader import (
    FLUSH_PROGRAM,
    LIFECYCLE_TRACEPOINTS,
    LOADER_PROGRAM,
    SOCKET_TRACEPOINT_PROGRAMS,
    SYSCALL_PROGRAMS,
)
from tests.unit.bcc_env import bcc_compiling, skip_reason

_SKIP = skip_reason()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")

# The default, a small one, and a response head larger than the request's (it is captured
# right after the request's bytes: the bounds the verifier checks differ), each in socket mode
# (this kernel's default: socket tracepoints, arguments from the user registers); the default
# also as syscall tracepoints with the arguments read at the exit (kernels with BTF before
# 6.5) and with entry hooks (kernels without bpf_task_pt_regs, and kprobes).
BUILDS = [
    (AbiLayout(), "socket"),
    (AbiLayout(), "exit"),
    (AbiLayout(), "entry"),
    (AbiLayout(256, 128), "socket"),
    (AbiLayout(128, 8192), "socket"),
]
BUILD_IDS = ["1024-512-socket", "1024-512-exit", "1024-512-entry-hooks", "256-128", "128-8192"]
SOCKET_PROGRAM_PREFIX = "sk_"  # programs compiled in socket mode only


def _compile(layout: AbiLayout, mode: str) -> object:
    """What the compile's child process does, after the agent's preflight."""
    from otelbpf.probes.compiled import compile_with_bcc
    from otelbpf.probes.loader import ProbeSettings

    settings = ProbeSettings(
        layout=layout, io_args_at_exit=mode != "entry", socket_tracepoints=mode == "socket"
    )
    with bcc_compiling():
        return compile_with_bcc(settings.cflags)


@pytest.fixture(scope="module", params=BUILDS, ids=BUILD_IDS)
def compiled(request: pytest.FixtureRequest) -> Iterator[tuple[AbiLayout, object]]:
    layout, mode = request.param
    bpf = _compile(layout, mode)
    bpf.otelbpf_socket_mode = mode == "socket"  # which programs the source gives this build
    try:
        yield layout, bpf
    finally:
        bpf.cleanup()


# ---------------------------------------------------------------- struct layouts


def _scalar_signature(ctype: type) -> object:
    if issubclass(ctype, ctypes.Array):
        return ("array", ctype._length_, _scalar_signature(ctype._type_))
    if issubclass(ctype, ctypes.Structure):
        return "struct"
    return ctype._type_  # struct-module code: signedness and width of the scalar


def _layout(struct: type[ctypes.Structure], prefix: str = "") -> list[tuple[str, int, int, object]]:
    """(path, offset, size, type signature) of every named field, nested structs flattened.

    Fields whose name starts with "_" are explicit padding: bcc may name those differently,
    so only their effect (every other offset and the total size) is compared.
    """
    rows: list[tuple[str, int, int, object]] = []
    for name, ctype in struct._fields_:
        if name.startswith("_"):
            continue
        offset = getattr(struct, name).offset
        rows.append((prefix + name, offset, ctypes.sizeof(ctype), _scalar_signature(ctype)))
        if issubclass(ctype, ctypes.Structure):
            rows.extend((p, offset + o, s, t) for p, o, s, t in _layout(ctype, prefix + name + "."))
    return rows


def _leaf(bpf: object, map_name: str) -> type[ctypes.Structure]:
    table = bpf[map_name.encode()]
    # per-CPU maps expose an array of one value per CPU as Leaf, the value itself as sLeaf
    return getattr(table, "sLeaf", table.Leaf)


def _assert_same_layout(c_type: type[ctypes.Structure], mirror: type[ctypes.Structure]) -> None:
    assert ctypes.sizeof(mirror) == ctypes.sizeof(c_type)
    assert _layout(mirror) == _layout(c_type)


def test_conn_state_matches(compiled: tuple[AbiLayout, object]) -> None:
    layout, bpf = compiled
    c_conn_state = _leaf(bpf, "conns")
    _assert_same_layout(c_conn_state, layout.conn_state)
    slack = max(layout.request_head_size, layout.response_head_size)
    exchange_size = ctypes.sizeof(layout.exchange_event)
    assert ctypes.sizeof(c_conn_state) == exchange_size + 8 + 8 + 16 + 56 + slack  # sk, walk state


def test_exchange_event_matches(compiled: tuple[AbiLayout, object]) -> None:
    layout, bpf = compiled
    c_exchange = dict(_leaf(bpf, "conns")._fields_)["ev"]
    _assert_same_layout(c_exchange, layout.exchange_event)
    assert _layout(layout.exchange_event)[-2:] == [
        ("request", 136, layout.request_head_size, ("array", layout.request_head_size, "B")),
        (
            "response",
            136 + layout.request_head_size,
            layout.response_head_size,
            ("array", layout.response_head_size, "B"),
        ),
    ]
    assert ctypes.sizeof(c_exchange) == 136 + layout.request_head_size + layout.response_head_size


def test_socket_facts_match(compiled: tuple[AbiLayout, object]) -> None:
    _, bpf = compiled
    _assert_same_layout(_leaf(bpf, "sockets"), abi.SocketFacts)
    assert ctypes.sizeof(abi.Endpoint) == 24


def test_process_event_matches(compiled: tuple[AbiLayout, object]) -> None:
    _, bpf = compiled
    _assert_same_layout(_leaf(bpf, "process_scratch"), abi.ProcessEvent)
    assert ctypes.sizeof(abi.ProcessEvent) == 16 + abi.TASK_COMM_LEN + abi.EXEC_FILENAME_SIZE


def test_user_written_args_match(compiled: tuple[AbiLayout, object]) -> None:
    _, bpf = compiled
    _assert_same_layout(_leaf(bpf, "threads"), abi.ThreadState)
    assert ctypes.sizeof(abi.IoArgs) == 32
    _assert_same_layout(_leaf(bpf, "pending_accept"), abi.AcceptArgs)
    _assert_same_layout(bpf[b"selector_comms"].Key, abi.CommKey)


def test_flush_request_matches(compiled: tuple[AbiLayout, object]) -> None:
    _, bpf = compiled
    _assert_same_layout(_leaf(bpf, "flush_queue"), abi.FlushRequest)
    assert bpf[b"flush_queue"].max_entries == abi.FLUSH_QUEUE_SIZE


def test_traced_pids_has_a_byte_per_pid(compiled: tuple[AbiLayout, object]) -> None:
    _, bpf = compiled
    table = bpf[b"traced_pids"]
    assert table.max_entries * ctypes.sizeof(table.Leaf) == abi.PID_LIMIT


# Maps that no path empties for good (a process exiting with sockets open, a TLS session whose
# end is not hooked, a goroutine parked in a read when its process exits, a marked connection
# closed before its next syscall): an LRU ages their entries out, where a plain hash would fill
# and refuse new ones for the rest of the agent's life.
LRU_MAPS = ("sockets", "threads", "tls_fds", "tls_retries", "go_tls_calls", "h2_marks")
BPF_MAP_TYPE_LRU_HASH = 9


def test_maps_nothing_empties_age_out(compiled: tuple[AbiLayout, object]) -> None:
    _, bpf = compiled
    assert {name: bpf[name.encode()].ttype for name in LRU_MAPS} == dict.fromkeys(
        LRU_MAPS, BPF_MAP_TYPE_LRU_HASH
    )


def test_counter_and_setting_arrays_match(compiled: tuple[AbiLayout, object]) -> None:
    _, bpf = compiled
    assert bpf[b"counters"].max_entries == abi.COUNTER_MAX == len(abi.Counter)
    assert bpf[b"settings"].max_entries == len(abi.Setting)


# ---------------------------------------------------------------- the programs


def _program_names(bpf: object) -> list[str]:
    from bcc import lib

    count = lib.bpf_num_functions(bpf.module)
    return sorted(lib.bpf_function_name(bpf.module, i).decode() for i in range(count))


def _source_program_names(bpf: object | None = None) -> list[str]:
    """The programs agent.c defines; for a build, those compiled into it."""
    source = abi.AGENT_SOURCE.read_text()
    names = [f"tp_enter_{n}" for n in re.findall(r"^SYS_ENTER\((\w+)\)", source, re.M)]
    names += [f"tp_exit_{n}" for n in re.findall(r"^SYS_EXIT\((\w+)\)", source, re.M)]
    names += re.findall(r"^int (\w+)\(", source, re.M)
    if bpf is not None and not bpf.otelbpf_socket_mode:
        names = [n for n in names if not n.startswith(SOCKET_PROGRAM_PREFIX)]
    return sorted(set(names))  # a program defined in both branches of an #ifdef counts once


def _is_kprobe_program(name: str) -> bool:
    # kprobes, and uprobes, which are kprobe-type programs
    return name.startswith(("syscall__", "kret_", "uprobe_", "uretprobe_"))


def _kind(name: str) -> int:
    """The program type the agent loads a program as: run_* are run on request."""
    from otelbpf.probes.objects import PROG_KPROBE, PROG_RAW_TRACEPOINT, PROG_TRACEPOINT

    if name.startswith("run_"):
        return PROG_RAW_TRACEPOINT
    return PROG_KPROBE if _is_kprobe_program(name) else PROG_TRACEPOINT


def test_program_list_is_what_the_source_defines(compiled: tuple[AbiLayout, object]) -> None:
    _, bpf = compiled
    names = _program_names(bpf)
    assert names == _source_program_names(bpf)
    prefixes = ("tp_enter_", "tp_exit_", "on_", "syscall__", "kret_", "uprobe_", "uretprobe_")
    prefixes += ("run_", SOCKET_PROGRAM_PREFIX)
    assert all(n.startswith(prefixes) for n in names)


def test_every_program_passes_the_verifier(compiled: tuple[AbiLayout, object]) -> None:
    import bcc

    _, bpf = compiled
    loaded = []
    for name in _program_names(bpf):
        prog_type = bcc.BPF.KPROBE if _is_kprobe_program(name) else bcc.BPF.TRACEPOINT
        if name.startswith("run_"):
            prog_type = bcc.BPF.RAW_TRACEPOINT
        function = bpf.load_func(name.encode(), prog_type)  # raises with the verifier log
        assert function.fd >= 0
        loaded.append(name)
    assert len(loaded) == len(_source_program_names(bpf))


def test_the_extracted_object_loads_without_bcc(compiled: tuple[AbiLayout, object]) -> None:
    """What a cached start does: maps made anew, their descriptors written into the
    bytecode, every program through the verifier again, with no bcc object involved."""
    from otelbpf.probes.compiled import CompiledObject, extract
    from otelbpf.probes.objects import LoadedObject

    _, bpf = compiled
    extracted = CompiledObject.from_json(extract(bpf).to_json())
    assert sorted(extracted.programs) == _source_program_names(bpf)
    assert {spec.name for spec in extracted.maps} >= {"conns", "events", "settings", "counters"}
    # every map reference in the code is made symbolic, none is left pointing at bcc's maps
    slots = [slot for program in extracted.programs.values() for slot in program.map_slots]
    assert len(slots) > len(extracted.programs)
    assert {name for _, name in slots} <= {spec.name for spec in extracted.maps}
    loaded = LoadedObject(extracted)
    try:
        assert set(loaded.map_fds) == {spec.name for spec in extracted.maps}
        from bcc import lib

        bcc_fds = {lib.bpf_table_fd(bpf.module, name.encode()) for name in loaded.map_fds}
        assert not set(loaded.map_fds.values()) & bcc_fds  # maps of its own
        for name in extracted.programs:
            assert loaded.program(name, _kind(name)) >= 0  # raises with the verifier's log
    finally:
        loaded.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_preloaded_programs_are_the_ones_attached_and_none_leaks(
    compiled: tuple[AbiLayout, object],
) -> None:
    """preload() verifies in background threads; program() hands out those descriptors; a
    preload never asked for is closed with the object; a program the verifier rejects raises
    where it is asked for, as a direct load does."""
    from otelbpf.probes.compiled import CompiledObject, ProgramCode, extract
    from otelbpf.probes.objects import PROG_TRACEPOINT, LoadedObject

    _, bpf = compiled
    extracted = extract(bpf)
    names = sorted(extracted.programs)
    kinds = {n: _kind(n) for n in names}
    before = _open_fds()
    loaded = LoadedObject(extracted)
    try:
        loaded.preload(kinds.items())
        wanted = names[: len(names) // 2]
        fds = {name: loaded.program(name, kinds[name]) for name in wanted}
        assert len(set(fds.values())) == len(wanted)
        assert all(loaded.program(name, kinds[name]) == fd for name, fd in fds.items())
    finally:
        loaded.close()
    assert _open_fds() == before  # the half never asked for is closed too

    exit_ = b"\x95" + b"\0" * 7  # a lone BPF_EXIT: r0 was never set, the verifier refuses
    broken = CompiledObject(
        extracted.maps,
        {"broken": ProgramCode("broken", exit_, ())},
        extracted.license,
        extracted.kernel_version,
    )
    loaded = LoadedObject(broken)
    try:
        loaded.preload([("broken", PROG_TRACEPOINT)])
        with pytest.raises(OSError, match="broken"):
            loaded.program("broken", PROG_TRACEPOINT)
    finally:
        loaded.close()
    assert _open_fds() == before


def test_the_flush_trigger_runs_on_request_for_the_agent_only(
    compiled: tuple[AbiLayout, object],
) -> None:
    """FLUSH_PROGRAM, run by BPF_PROG_TEST_RUN in this thread (no system call hooked for it),
    is flush_trigger(): while another pid is the agent's it leaves a queued connection alone;
    once this pid is, it emits the connection's exchange and leaves it idle."""
    from otelbpf.abi import (
        FLUSH_NO_SLOT,
        Counter,
        EventType,
        FlushRequest,
        Phase,
        Setting,
        conn_key,
    )
    from otelbpf.probes.compiled import extract
    from otelbpf.probes.objects import LoadedObject

    layout, bpf = compiled
    loaded = LoadedObject(extract(bpf))
    u32, u64 = ctypes.c_uint32, ctypes.c_uint64
    try:
        settings = loaded.map("settings", u32, u64)
        conns = loaded.map("conns", u64, layout.conn_state)
        queue = loaded.map("flush_queue", u32, FlushRequest)
        counters = loaded.map("counters", u32, u64)
        key = conn_key(os.getpid(), 7)
        conn = layout.conn_state()
        conn.ev.type, conn.ev.pid, conn.ev.fd = EventType.EXCHANGE, os.getpid(), 7
        conn.ev.end_ns, conn.phase = 1, Phase.RESPONSE
        conns[key] = conn
        queue[0] = FlushRequest(key, 1, FLUSH_NO_SLOT)  # forced: no idleness to wait for
        settings[Setting.FLUSH_COUNT] = 1
        settings[Setting.AGENT_TGID] = os.getpid() + 1

        assert loaded.run(FLUSH_PROGRAM) == 0
        assert conns[key].phase == Phase.RESPONSE
        assert sum(counters[Counter.EVENTS]) == 0

        settings[Setting.AGENT_TGID] = os.getpid()
        assert loaded.run(FLUSH_PROGRAM) == 0
        assert conns[key].phase == Phase.IDLE
        assert sum(counters[Counter.EVENTS]) == 1  # into the ring buffer, nobody reading
    finally:
        loaded.close()


VERIFIER_LIMIT = 1_000_000  # BPF_COMPLEXITY_LIMIT_INSNS: instructions the verifier walks
VERIFIER_SHARE = 0.9  # of it a program may use here: other kernels prune less well


def test_every_program_leaves_the_verifier_headroom(compiled: tuple[AbiLayout, object]) -> None:
    """A program the verifier passes here at 99% of its budget fails on a kernel that prunes a
    little less (tp_exit_io once took 996,822 of 1,000,000): each must leave a tenth."""
    from otelbpf.probes import bpf_calls
    from otelbpf.probes.compiled import extract
    from otelbpf.probes.objects import LoadedObject

    _, bpf = compiled
    loaded = LoadedObject(extract(bpf))
    walked = {}
    try:
        for name, program in loaded.compiled.programs.items():
            log = bpf_calls.verifier_log(
                _kind(name),
                name,
                program.with_map_fds(loaded.map_fds),
                loaded.compiled.license,
                loaded.compiled.kernel_version,
            )  # raises with the log if the verifier rejects it
            found = re.search(r"processed (\d+) insns", log)
            assert found, name
            walked[name] = int(found.group(1))
    finally:
        loaded.close()
    assert len(walked) == len(_source_program_names(bpf))
    heavy = {n: w for n, w in walked.items() if w > VERIFIER_SHARE * VERIFIER_LIMIT}
    assert heavy == {}, f"too close to the verifier's limit: {heavy}"


def test_loader_names_only_programs_that_exist() -> None:
    programs = set(_source_program_names())
    referenced = set(LIFECYCLE_TRACEPOINTS.values())
    referenced |= {*tlslibs.OPENSSL_SYMBOLS.values(), *tlslibs.GNUTLS_SYMBOLS.values()}
    referenced |= {*tlslibs.GO_SYMBOLS.values(), tlslibs.C_RETURN_PROGRAM}
    referenced.add(tlslibs.GO_RETURN_PROGRAM)
    referenced.add(FLUSH_PROGRAM)
    referenced |= {*SOCKET_TRACEPOINT_PROGRAMS.values(), LOADER_PROGRAM}
    for entry, exit_ in SYSCALL_PROGRAMS.values():
        referenced |= {f"tp_enter_{entry}", f"syscall__{entry}"}
        if exit_ is not None:
            referenced |= {f"tp_exit_{exit_}", f"kret_{exit_}"}
    assert referenced - programs == set()
    # and nothing in the source is left unattached
    assert programs - referenced == set()


# ---------------------------------------------------------------- the tracepoint contract


def _tracefs_events() -> Path | None:
    if os.geteuid() == 0:
        preflight.ensure_tracefs()  # a fresh machine has it unmounted; the agent mounts it too
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        try:
            if (Path(root) / "events" / "syscalls").is_dir():
                return Path(root) / "events"
        except OSError:  # not readable without root
            continue
    return None


TRACEFS_EVENTS = _tracefs_events()
_FIELD = re.compile(r"field:[^;]*?(\w+)(?:\[\w*\])?;\s*offset:(\d+);\s*size:(\d+);")

# The argument names each sys_enter tracepoint has, up to the last one agent.c reads:
# struct sys_enter_ctx reads args[i] at offset 16 + 8 * i.
ARGUMENTS_READ = {
    "read": ["fd", "buf"],
    "recvfrom": ["fd", "ubuf"],
    "readv": ["fd", "vec", "vlen"],
    "recvmsg": ["fd", "msg"],
    "write": ["fd", "buf"],
    "sendto": ["fd", "buff"],
    "writev": ["fd", "vec", "vlen"],
    "sendmsg": ["fd", "msg"],
    "sendfile64": ["out_fd"],
    "socket": ["family", "type"],
    "bind": ["fd", "umyaddr"],
    "connect": ["fd", "uservaddr"],
    "accept": ["fd", "upeer_sockaddr"],
    "accept4": ["fd", "upeer_sockaddr"],
    "close": ["fd"],
    "getppid": [],
    "mmap": ["addr", "len", "prot", "flags", "fd"],
}


def _fields(event: str) -> dict[str, tuple[int, int]]:
    text = (TRACEFS_EVENTS / event / "format").read_text()
    return {name: (int(off), int(size)) for name, off, size in _FIELD.findall(text)}


def test_argument_table_covers_every_hooked_syscall() -> None:
    assert sorted(ARGUMENTS_READ) == sorted(SYSCALL_PROGRAMS)


@pytest.mark.skipif(TRACEFS_EVENTS is None, reason="tracefs with syscall tracepoints not mounted")
@pytest.mark.parametrize("syscall", sorted(SYSCALL_PROGRAMS))
def test_syscall_tracepoint_layout(syscall: str) -> None:
    """struct sys_enter_ctx / sys_exit_ctx in agent.c against the kernel's own formats."""
    enter = _fields(f"syscalls/sys_enter_{syscall}")
    assert enter["__syscall_nr"] == (8, 4)
    for index, name in enumerate(ARGUMENTS_READ.get(syscall, [])):
        assert enter[name] == (16 + 8 * index, 8), name
    if SYSCALL_PROGRAMS[syscall][1] is not None:
        exit_ = _fields(f"syscalls/sys_exit_{syscall}")
        assert exit_["__syscall_nr"] == (8, 4)
        assert exit_["ret"] == (16, 8)


@pytest.mark.skipif(TRACEFS_EVENTS is None, reason="tracefs with syscall tracepoints not mounted")
def test_lifecycle_tracepoints_exist() -> None:
    for tracepoint in LIFECYCLE_TRACEPOINTS:
        assert (TRACEFS_EVENTS / tracepoint.replace(":", "/") / "format").is_file(), tracepoint


@pytest.mark.skipif(TRACEFS_EVENTS is None, reason="tracefs not mounted")
def test_lifecycle_tracepoint_layouts() -> None:
    """struct task_newtask_ctx and sched_process_exec_ctx in agent.c against the kernel."""
    newtask = _fields("task/task_newtask")
    assert newtask["pid"] == (8, 4)
    assert newtask["comm"] == (12, 16)
    assert newtask["clone_flags"] == (32, 8)
    exec_ = _fields("sched/sched_process_exec")
    assert exec_["filename"] == (8, 4)  # __data_loc
    assert exec_["pid"] == (12, 4)


@pytest.mark.skipif(
    TRACEFS_EVENTS is None or not (TRACEFS_EVENTS / "sock" / "sock_send_length").is_dir(),
    reason="no tracefs, or a kernel before 6.3 (no sock_send_length): socket mode is not used",
)
def test_socket_tracepoint_layouts() -> None:
    """struct sock_length_ctx and inet_sock_state_ctx in agent.c against the kernel."""
    for event in ("sock/sock_send_length", "sock/sock_recv_length"):
        fields = _fields(event)
        assert fields["sk"] == (8, 8)
        assert fields["family"] == (16, 2)
        assert fields["protocol"] == (18, 2)
        assert fields["ret"] == (20, 4)
        assert fields["flags"] == (24, 4)
    state = _fields("sock/inet_sock_set_state")
    expected = {
        "skaddr": (8, 8),
        "oldstate": (16, 4),
        "newstate": (20, 4),
        "sport": (24, 2),
        "dport": (26, 2),
        "family": (28, 2),
        "protocol": (30, 2),
        "saddr": (32, 4),
        "daddr": (36, 4),
        "saddr_v6": (40, 16),
        "daddr_v6": (56, 16),
    }
    assert {name: state[name] for name in expected} == expected


def test_exchange_header_is_the_records_prefix(compiled: tuple[AbiLayout, object]) -> None:
    """The ring-buffer record is struct exchange_event cut where its heads begin."""
    layout, bpf = compiled
    c_exchange = dict(_leaf(bpf, "conns")._fields_)["ev"]
    header_fields = _layout(abi.ExchangeHeader)
    assert header_fields == _layout(c_exchange)[: len(header_fields)]
    assert ctypes.sizeof(abi.ExchangeHeader) == c_exchange.request.offset


def test_h2_chunk_header_is_the_events_prefix(compiled: tuple[AbiLayout, object]) -> None:
    _, bpf = compiled
    c_chunk = dict(_leaf(bpf, "h2_scratch")._fields_)["ev"]
    header_fields = _layout(abi.H2ChunkHeader)
    assert header_fields == _layout(c_chunk)[: len(header_fields)]
    assert ctypes.sizeof(abi.H2ChunkHeader) == c_chunk.data.offset
    assert c_chunk.data.size == abi.H2_CHUNK_SIZE
