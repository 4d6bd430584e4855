/* otelbpf's BPF programs: socket probes and TLS library uprobes, paired in the kernel.
 *
 * One file because bcc compiles one translation unit and rewrites its map syntax
 * (conns.lookup(...)) reliably only in the file it is given: code moved into headers compiled
 * but failed the verifier (indirect calls where map helpers should be). The file is in parts:
 *   1. pairing: maps, the pid filter, the per-connection exchange state machine
 *   2. socket system calls and process lifecycle (logic)
 *   3. TLS library calls (logic)
 *   4. entry points, thin, by the names the loader (otelbpf/probes/loader.py) attaches
 * The kernel <-> user ABI is otelbpf.h.
 *
 * Pairing: a change of direction on a connection closes an exchange; one ring-buffer event
 * carries the whole exchange: timings, byte counts, addresses and the first bytes of each
 * direction. Reads stable interfaces: syscall arguments, tracepoint fields, uprobe registers
 * and user memory. No kernel struct layout comes from headers, so headers of another kernel
 * version compile it safely; the struct walks (sk_endpoints, sk_of_fd) use offsets from the
 * running kernel's BTF.
 *
 * Defines set by the loader: MAX_CONNS, RINGBUF_PAGES, WAKEUP_BATCH, REQUEST_HEAD_SIZE,
 * RESPONSE_HEAD_SIZE, and from the kernel's BTF SOCK_OFFSETS and the OFF_* offsets
 * (otelbpf/probes/kernel_layout.py). Nothing that differs between two runs of the agent is
 * compiled in (its pid is a setting), so one compiled object serves every run: see
 * otelbpf/probes/compiled.py.
 */
#include <uapi/linux/ptrace.h>
#include <linux/socket.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/uio.h>
#include <linux/sched.h>

#include "otelbpf.h"

/* ================================================================ 1. pairing */

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#define SOCK_TYPE_MASK 0xf
#define SOCK_STREAM_TYPE 1
#define EINPROGRESS_ERR 115
#define MAX_IOVECS 64

/* Syscall tracepoint records have a stable layout: 8 bytes of common fields, the syscall
 * number, then each argument (or the return value) in an 8-byte slot. */
struct sys_enter_ctx {
    __u64 common;
    __s32 nr;
    __u32 _pad;
    __u64 args[6];
};
struct sys_exit_ctx {
    __u64 common;
    __s32 nr;
    __u32 _pad;
    __s64 ret;
};

/* ---------------------------------------------------------------- maps */

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

BPF_HASH(selector_ports, __u16, __u8, 256);       /* TCP port -> 1: --port selectors */
BPF_HASH(selector_comms, struct comm_key, __u8, 256); /* --exe NAME without wildcards */
BPF_ARRAY(settings, __u64, SETTING_MAX);
BPF_PERCPU_ARRAY(counters, __u64, COUNTER_MAX);
BPF_ARRAY(conn_ids, __u64, 1);                    /* next connection id */
BPF_PERCPU_ARRAY(wakeup_clock, __u64, 1);         /* this CPU's events since it last woke the reader */
BPF_ARRAY(zero_conn, struct conn_state, 1);       /* all zeroes: template for new entries */
BPF_ARRAY(flush_queue, struct flush_request, FLUSH_QUEUE_SIZE);
BPF_PERCPU_ARRAY(process_scratch, struct process_event, 1);

/* The processes being traced: byte tgid is 1 for each (eight bytes to a value: an array's
 * values are 8-byte aligned). A byte for every possible pid, 4 MiB, makes the filter one load
 * the JIT inlines, with no hash and no collision: a process outside the selection leaves every
 * probe after it. Each read and write of such a process used to pay a hash lookup (about 300 ns
 * with cold caches): with nginx at 4k req/s untraced, the BPF time of every process's calls
 * went from 2.03 to 0.92 us a request (bpf_stats, medians of 6). User space writes bytes
 * through mmap; a byte store from either side leaves its neighbours alone, so there is no
 * read-modify-write to race. */
#ifndef BPF_F_MMAPABLE
#define BPF_F_MMAPABLE (1U << 10)
#endif
BPF_F_TABLE("array", __u32, __u64, traced_pids, PID_LIMIT / 8, BPF_F_MMAPABLE);

/* Connections in flight, allocated on use: a host with few connections pays for few. */
BPF_F_TABLE("hash", __u64, struct conn_state, conns, MAX_CONNS, BPF_F_NO_PREALLOC);
/* What socket() and bind() said of a traced process's sockets: one map, so that close(), which
 * nginx calls on a file for every request, finds there is nothing to forget in one lookup.
 * LRU: a process that exits with sockets open never closes them, and its entries must age out
 * rather than fill the map (a listener whose entry went is read from its socket at accept). */
BPF_TABLE("lru_hash", __u64, struct socket_facts, sockets, 65536);
/* Connections whose exchange has its answer: the idle sweep's candidates, so that it never
 * reads the big conn_state values of every connection. Slot conn_id % ANSWERED_SLOTS holds the
 * connection's key while its exchange is answered, 0 otherwise. An array, so that a mark is
 * one store the JIT inlines: a hash map's update and delete per request cost nginx 0.7 us of
 * its 25 (bpf_stats, this VM). User space reads it through mmap. Two live connections whose
 * ids are ANSWERED_SLOTS apart share a slot: the later mark wins, and the other's exchange
 * waits for its next request, its close, or the agent's periodic check of every connection. */
BPF_F_TABLE("array", __u32, __u64, answered, ANSWERED_SLOTS, BPF_F_MMAPABLE);

/* What an in-flight syscall needs at its exit, keyed by thread. */
enum io_kind { IO_FLAT = 0, IO_IOVEC = 1, IO_MSG = 2, IO_SIZE_ONLY = 3 };
enum io_dir { DIR_EGRESS = 0, DIR_INGRESS = 1 };

/* An entry per thread that does I/O on a tracked connection or calls a TLS library, kept until
 * the thread exits (see io_enter). LRU: a host with more such threads than entries, or a
 * thread that vanished without an exit (a non-leader thread's exec takes the leader's id),
 * loses its oldest entries rather than failing the update of a new one. */
BPF_TABLE("lru_hash", __u64, struct thread_state, threads, 32768);

struct connect_args {
    __u64 fd;
    struct endpoint peer;
};
BPF_HASH(pending_connect, __u64, struct connect_args, 4096);

BPF_HASH(pending_accept, __u64, struct accept_args, 4096);

struct socket_args {
    __u64 type;
};
BPF_HASH(pending_socket, __u64, struct socket_args, 4096);

/* HTTP/2: events are built in a per-CPU buffer (too big for the stack), with slack after the
 * data so a variable-offset copy can be proven in bounds; user space marks connections found
 * to speak HTTP/2 without their preface (opened before tracing began). */
/* The frame walk's position, kept in map memory rather than registers: the verifier then
 * sees plain unknown scalars each step and prunes its states (kept in registers, the bounded
 * loop's states multiplied past the verifier's limit). */
struct h2_walk {
    const __u8 *segment;
    const struct iovec *iov;
    __u64 segment_left;
    __u64 remaining;
    __u64 skip_start;
    __u64 iovcnt;
    __u64 next_iov;
};
struct h2_chunk_buffer {
    struct h2_walk walk;
    struct h2_chunk_event ev;
    __u8 _slack[H2_CHUNK_SIZE];
};
BPF_PERCPU_ARRAY(h2_scratch, struct h2_chunk_buffer, 1);
/* LRU: a marked connection that closes before its next syscall never reads its mark. */
BPF_TABLE("lru_hash", __u64, __u8, h2_marks, 4096);

/* TLS: which socket each library session writes to, and which call is in progress. */
struct tls_session_key {
    __u32 tgid;
    __u32 _pad;
    __u64 session; /* SSL*, gnutls_session_t */
};
/* The connection each library session is bound to: its descriptor, and its conn_id, as a
 * session's memory is reused by later connections (a binding whose connection is gone, or
 * whose descriptor names another connection now, is stale: the session is bound anew). */
struct tls_binding {
    __u64 conn_id;
    __u32 fd;
    __u32 _pad;
};
/* LRU: nothing deletes a binding (a session's end is not hooked), so the bindings of ended
 * sessions and exited processes age out instead of filling the table, after which no new
 * session could be bound. */
BPF_TABLE("lru_hash", struct tls_session_key, struct tls_binding, tls_fds, 65536);
/* The TLS library call each thread is in (process_exit forgets a thread that ended in one). */
struct tls_call {
    __u64 session;
    const void *buf;
    const void *length_out; /* SSL_*_ex: where the library writes the byte count */
    __u64 length;           /* the bytes a write was asked to send */
    __u64 entered_ns;
    __u8 dir;
    __u8 int_return; /* the function returns int: only EAX is meaningful (-1 is 0xffffffff) */
    __u8 counted;    /* a write counted at entry */
    __u8 _pad[5];
};
BPF_HASH(tls_calls, __u64, struct tls_call, 16384); /* thread -> call in progress */

/* ---------------------------------------------------------------- helpers */

static __always_inline __u64 conn_key_of(__u32 tgid, __u64 fd) {
    return ((__u64)tgid << 32) | (__u32)fd;
}

static __always_inline void count(__u32 index) {
    __u64 *value = counters.lookup(&index);
    if (value)
        *value += 1;
}

static __always_inline __u64 setting(__u32 index) {
    __u64 *value = settings.lookup(&index);
    return value ? *value : 0;
}

/* The agent's pid, a setting rather than a define: the compiled object is cached and reused. */
static __always_inline __u32 agent_tgid(void) {
    return (__u32)setting(SETTING_AGENT_TGID);
}

/* The process's byte in traced_pids. */
static __always_inline __u8 *traced_byte(__u32 tgid) {
    __u32 index = (tgid & (PID_LIMIT - 1)) >> 3;
    __u8 *bytes = (__u8 *)traced_pids.lookup(&index);
    return bytes ? bytes + (tgid & 7) : NULL;
}

/* The process's byte is set: it was selected, or forked by a selected process. */
static __always_inline int marked_traced(__u32 tgid) {
    __u8 *traced = traced_byte(tgid);
    return traced && *traced;
}

/* The filter every program checks first: a process outside the selection leaves after one
 * load. Neither allow() nor user space marks the agent itself. */
static __always_inline int is_traced(__u32 tgid) {
    if (marked_traced(tgid))
        return 1;
    return setting(SETTING_TRACE_ALL) != 0 && tgid != agent_tgid();
}

static __always_inline void allow(__u32 tgid) {
    __u8 *traced = traced_byte(tgid);
    if (traced && tgid != agent_tgid())
        *(volatile __u8 *)traced = 1;
}

static __always_inline int port_selected(__u16 port) {
    if (!setting(SETTING_PORT_FILTER))
        return 0;
    return selector_ports.lookup(&port) != NULL;
}

/* Each CPU wakes the reader once per WAKEUP_BATCH of its events, not once per event: a
 * wake-up raises an interrupt inside the traced process's system call (about 28 us of it in
 * this VM, measured with bpf_stats). The reader also polls on a short timeout, so a quiet
 * period still delivers what is pending: the batch only keeps a burst from filling the ring
 * between two polls. Counted per CPU, with no atomic on a cache line every CPU writes. */
static __always_inline __u64 wakeup_flag(void) {
    __u32 zero = 0;
    __u64 *clock = wakeup_clock.lookup(&zero);
    if (!clock)
        return 0;
    if (++*clock < WAKEUP_BATCH)
        return BPF_RB_NO_WAKEUP;
    *clock = 0;
    return BPF_RB_FORCE_WAKEUP;
}

static __always_inline void emit(void *data, __u64 size) {
    if (events.ringbuf_output(data, size, wakeup_flag()) == 0)
        count(COUNTER_EVENTS);
    else
        count(COUNTER_DROPS);
}

/* Read a sockaddr from user memory into an endpoint; returns 0 when it is IPv4 or IPv6. */
static __always_inline int read_sockaddr(const void *uaddr, struct endpoint *ep) {
    __u16 family = 0;
    if (!uaddr || bpf_probe_read_user(&family, sizeof(family), uaddr))
        return -1;
    if (family == AF_INET) {
        struct sockaddr_in sin = {};
        if (bpf_probe_read_user(&sin, sizeof(sin), uaddr))
            return -1;
        __builtin_memcpy(ep->addr, &sin.sin_addr, 4);
        ep->port = bpf_ntohs(sin.sin_port);
    } else if (family == AF_INET6) {
        struct sockaddr_in6 sin6 = {};
        if (bpf_probe_read_user(&sin6, sizeof(sin6), uaddr))
            return -1;
        __builtin_memcpy(ep->addr, &sin6.sin6_addr, 16);
        ep->port = bpf_ntohs(sin6.sin6_port);
    } else {
        return -1;
    }
    ep->family = family;
    return 0;
}

/* The calling thread's entry in threads, made on its first use. */
static __always_inline struct thread_state *thread_of(__u64 pid_tgid) {
    struct thread_state *thread = threads.lookup(&pid_tgid);
    if (thread)
        return thread;
    struct thread_state blank = {};
    threads.update(&pid_tgid, &blank);
    return threads.lookup(&pid_tgid);
}

/* The connection's slot in answered (see there). */
static __always_inline __u64 *answered_mark(struct conn_state *conn) {
    __u32 slot = conn->ev.conn_id & (ANSWERED_SLOTS - 1);
    return answered.lookup(&slot);
}

/* Forget the exchange in progress without emitting it. */
static __always_inline void drop_exchange(struct conn_state *conn) {
    if (conn->phase == PHASE_RESPONSE) {
        __u64 key = conn_key_of(conn->ev.pid, conn->ev.fd);
        __u64 *mark = answered_mark(conn);
        if (mark && *mark == key) /* a slot shared with a later connection holds its key */
            *mark = 0;
    }
    conn->phase = PHASE_IDLE;
    conn->ev.request_bytes = 0;
    conn->ev.response_bytes = 0;
    conn->ev.request_len = 0;
    conn->ev.response_len = 0;
    conn->ev.start_ns = 0;
    conn->ev.end_ns = 0;
}

/* Exchange events go out compact: the fixed fields, then only the captured request and
 * response bytes (typically a few hundred of the 1.5 KiB the buffers hold). The response is
 * captured right after the request's bytes (append_response), so the event is one run of
 * conn_state, sent as it lies, with no copy into a scratch buffer first. */
static __always_inline void emit_exchange(struct conn_state *conn) {
    const __u64 header = __builtin_offsetof(struct exchange_event, request);
    __u64 size = header + conn->ev.request_len + conn->ev.response_len;
    /* a bound the verifier keeps through the helper call */
    asm volatile("%0 &= 0x7fff" : "+r"(size));
    if (size > sizeof(conn->ev))
        size = sizeof(conn->ev);
    emit(&conn->ev, size);
}

/* Emit the exchange held in conn and make room for the next one. */
static __always_inline void finish_exchange(struct conn_state *conn, __u32 flags) {
    if (conn->phase == PHASE_REQUEST)
        flags |= EXCHANGE_F_NO_RESPONSE;
    conn->ev.flags |= flags;
    emit_exchange(conn);
    conn->ev.flags &= (EXCHANGE_F_ROLE_INFERRED | EXCHANGE_F_SEEDED | EXCHANGE_F_TLS);
    drop_exchange(conn);
}

/* From now on a TLS library hook feeds this connection: what the socket carried so far was
 * handshake ciphertext, which is never an exchange. */
static __always_inline void bind_tls(__u32 tgid, __u64 session, __u32 fd,
                                     struct conn_state *conn) {
    struct tls_session_key key = {.tgid = tgid, .session = session};
    struct tls_binding binding = {.conn_id = conn->ev.conn_id, .fd = fd};
    tls_fds.update(&key, &binding);
    if (!conn->tls) {
        conn->tls = 1;
        conn->ev.flags |= EXCHANGE_F_TLS;
        drop_exchange(conn);
    }
}

/* Append up to n user bytes at src to a head buffer. The offset is masked and the length
 * clamped so the verifier can see the copy stays within the buffer plus conn_state's slack. */
#define APPEND_HEAD(buf, len_field, SIZE, src, n)                                    \
    ({                                                                               \
        __u32 __off = (len_field);                                                   \
        __u64 __want = (n);                                                          \
        __u32 __copied = 0;                                                          \
        if (__off < (SIZE) && __want > 0) {                                          \
            __u64 __room = (SIZE) - __off;                                           \
            if (__want > __room)                                                     \
                __want = __room;                                                     \
            __off &= ((SIZE) - 1);                                                   \
            __want &= ((SIZE) * 2 - 1);                                              \
            if (__want > (SIZE))                                                     \
                __want = (SIZE);                                                     \
            if (bpf_probe_read_user(&(buf)[__off], __want, (src)) == 0)             \
                __copied = __want;                                                   \
        }                                                                            \
        (len_field) += __copied;                                                     \
        __copied;                                                                    \
    })

/* Response bytes follow the request's: the request is complete once the response begins (a
 * request byte after it starts the next exchange), and emit_exchange sends both as one run. */
static __always_inline void append_response(struct conn_state *conn, const void *src, __u64 n) {
    __u32 used = conn->ev.response_len;
    if (used >= RESPONSE_HEAD_SIZE || n == 0)
        return;
    __u64 want = n;
    if (want > RESPONSE_HEAD_SIZE - used)
        want = RESPONSE_HEAD_SIZE - used;
    __u64 off = conn->ev.request_len + used;
    /* bounds the verifier can see: conn_state's slack covers a copy from any offset below
     * the two heads' sizes */
    asm volatile("%0 &= 0xffff" : "+r"(off));
    if (off >= REQUEST_HEAD_SIZE + RESPONSE_HEAD_SIZE)
        return;
    want &= (RESPONSE_HEAD_SIZE * 2 - 1);
    if (want > RESPONSE_HEAD_SIZE)
        want = RESPONSE_HEAD_SIZE;
    if (bpf_probe_read_user(&conn->ev.request[off], want, src) == 0)
        conn->ev.response_len = used + want;
}

static __always_inline void append_flat(struct conn_state *conn, int to_request,
                                        const void *src, __u64 n) {
    if (to_request)
        APPEND_HEAD(conn->ev.request, conn->ev.request_len, REQUEST_HEAD_SIZE, src, n);
    else
        append_response(conn, src, n);
}

static __always_inline void append_iovec(struct conn_state *conn, int to_request,
                                         const struct iovec *iov, __u64 iovcnt, __u64 n) {
    __u64 left = n;
    __u32 room = to_request ? REQUEST_HEAD_SIZE : RESPONSE_HEAD_SIZE;
    /* writers like gRPC's put each frame in its own slice: read as many as the head holds
     * (a bounded loop, not unrolled) */
    for (int i = 0; i < MAX_IOVECS; i++) {
        __u32 used = to_request ? conn->ev.request_len : conn->ev.response_len;
        if (i >= iovcnt || left == 0 || used >= room)
            break;
        struct iovec vec = {};
        if (bpf_probe_read_user(&vec, sizeof(vec), &iov[i]))
            break;
        __u64 chunk = vec.iov_len < left ? vec.iov_len : left;
        append_flat(conn, to_request, vec.iov_base, chunk);
        left -= chunk;
    }
}

/* Walk one syscall's HTTP/2 frames: copy frame headers and every non-DATA frame (HEADERS,
 * CONTINUATION, SETTINGS...: what the parser needs), pass over DATA payloads, which are only
 * counted. The position in the frame stream carries over between syscalls per direction.
 * Returns 0 when the walk lost its place (more steps than the bounded loop takes): the
 * connection then goes raw. */
#define H2_WALK_STEPS 64
static __always_inline int h2_walk(struct h2_chunk_buffer *chunk, struct conn_state *conn,
                                   const struct io_args *io, __u64 bytes, __u64 start) {
    struct h2_walk *walk = &chunk->walk;
    __u32 dir = io->dir & 1;
    walk->segment = NULL;
    walk->segment_left = 0;
    walk->iov = NULL;
    walk->iovcnt = 0;
    walk->next_iov = 0;
    walk->remaining = bytes;
    walk->skip_start = start;
    if (io->kind == IO_FLAT) {
        walk->segment = io->buf;
        walk->segment_left = bytes;
    } else if (io->kind == IO_IOVEC) {
        walk->iov = (const struct iovec *)io->buf;
        walk->iovcnt = io->iovcnt;
    } else if (io->kind == IO_MSG) {
        struct user_msghdr msg = {};
        if (bpf_probe_read_user(&msg, sizeof(msg), io->buf))
            return 0;
        walk->iov = msg.msg_iov;
        walk->iovcnt = msg.msg_iovlen;
    } else {
        return 0;
    }
    for (int i = 0; i < H2_WALK_STEPS; i++) {
        if (walk->remaining == 0)
            return 1;
        if (walk->segment_left == 0) {
            __u64 index = walk->next_iov;
            if (!walk->iov || index >= walk->iovcnt || index >= MAX_IOVECS)
                return 0;
            struct iovec vec = {};
            if (bpf_probe_read_user(&vec, sizeof(vec), &walk->iov[index & (MAX_IOVECS - 1)]))
                return 0;
            walk->next_iov = index + 1;
            walk->segment = vec.iov_base;
            walk->segment_left = vec.iov_len < walk->remaining ? vec.iov_len : walk->remaining;
            if (walk->segment_left == 0)
                continue;
            /* and on, in the same step: gRPC writes a slice per header field */
        }
        __u64 left = walk->segment_left;
        __u64 take;
        if (walk->skip_start) {
            take = walk->skip_start < left ? walk->skip_start : left;
            walk->skip_start -= take;
        } else if (conn->h2_skip[dir]) {
            take = conn->h2_skip[dir] < left ? conn->h2_skip[dir] : left;
            conn->h2_skip[dir] -= take;
        } else if (conn->h2_keep[dir]) {
            take = conn->h2_keep[dir] < left ? conn->h2_keep[dir] : left;
            APPEND_HEAD(chunk->ev.data, chunk->ev.copied_len, H2_CHUNK_SIZE, walk->segment,
                        take);
            conn->h2_keep[dir] -= take;
        } else {
            /* a frame header: it may be split between iovecs or writes, so its bytes gather
             * in the connection's state until all 9 are there */
            __u32 have = conn->h2_header_have[dir];
            if (have > 8)
                return 0;
            __u64 need = 9 - have;
            take = need < left ? need : left;
            if (take > 9)
                return 0;
            if (bpf_probe_read_user(&conn->h2_header[dir * 24 + (have & 15)], take, walk->segment))
                return 0;
            APPEND_HEAD(chunk->ev.data, chunk->ev.copied_len, H2_CHUNK_SIZE, walk->segment,
                        take);
            have += take;
            if (have == 9) {
                __u8 *header = &conn->h2_header[dir * 24];
                __u32 length = ((__u32)header[0] << 16) | ((__u32)header[1] << 8) | header[2];
                if (header[3] == 0) /* DATA: counted by user space from this header */
                    conn->h2_skip[dir] = length;
                else
                    conn->h2_keep[dir] = length;
                have = 0;
            }
            conn->h2_header_have[dir] = have;
        }
        walk->segment += take;
        walk->segment_left -= take;
        walk->remaining -= take;
    }
    return walk->remaining == 0;
}

/* One syscall's data on an HTTP/2 connection, as one event: walked frames, or (raw) the
 * first H2_CHUNK_SIZE bytes, with total_len saying how much the syscall moved. */
static __always_inline void emit_h2_chunk(struct conn_state *conn, const struct io_args *io,
                                          __u64 bytes, __u64 pid_tgid, __u32 flags,
                                          __u64 preface) {
    __u32 zero = 0;
    struct h2_chunk_buffer *chunk = h2_scratch.lookup(&zero);
    if (!chunk)
        return;
    chunk->ev.type = EVENT_H2_CHUNK;
    chunk->ev.flags = (conn->ev.flags & EXCHANGE_F_TLS) | flags;
    chunk->ev.pid = conn->ev.pid;
    chunk->ev.tid = (__u32)pid_tgid;
    chunk->ev.fd = conn->ev.fd;
    chunk->ev.role = conn->ev.role;
    chunk->ev.dir = io ? io->dir : 0;
    chunk->ev.conn_id = conn->ev.conn_id;
    chunk->ev.ts_ns = bpf_ktime_get_ns();
    chunk->ev.total_len = bytes;
    chunk->ev.copied_len = 0;
    chunk->ev.local = conn->ev.local;
    chunk->ev.peer = conn->ev.peer;
    bpf_get_current_comm(&chunk->ev.comm, sizeof(chunk->ev.comm));
    if (!io || io->kind == IO_SIZE_ONLY) {
        /* nothing to copy */
    } else if (conn->h2 == H2_WALK) {
        /* the preface is passed over, not copied: the parser needs only the frames */
        chunk->ev.flags |= CHUNK_F_ELIDED;
        if (!h2_walk(chunk, conn, io, bytes, preface)) {
            chunk->ev.flags |= CHUNK_F_WALK_LOST;
            conn->h2 = H2_RAW;
        }
    } else if (io->kind == IO_FLAT) {
        APPEND_HEAD(chunk->ev.data, chunk->ev.copied_len, H2_CHUNK_SIZE, io->buf, bytes);
    } else {
        const struct iovec *iov = (const struct iovec *)io->buf;
        __u64 iovcnt = io->iovcnt;
        if (io->kind == IO_MSG) {
            struct user_msghdr msg = {};
            if (bpf_probe_read_user(&msg, sizeof(msg), io->buf))
                return;
            iov = msg.msg_iov;
            iovcnt = msg.msg_iovlen;
        }
        __u64 left = bytes;
        /* gRPC writes a frame per slice: many iovecs. A bounded loop, not unrolled. */
        for (int i = 0; i < MAX_IOVECS; i++) {
            if (i >= iovcnt || left == 0 || chunk->ev.copied_len >= H2_CHUNK_SIZE)
                break;
            struct iovec vec = {};
            if (bpf_probe_read_user(&vec, sizeof(vec), &iov[i]))
                break;
            __u64 piece = vec.iov_len < left ? vec.iov_len : left;
            APPEND_HEAD(chunk->ev.data, chunk->ev.copied_len, H2_CHUNK_SIZE, vec.iov_base, piece);
            left -= piece;
        }
    }
    __u64 size = __builtin_offsetof(struct h2_chunk_event, data) + chunk->ev.copied_len;
    /* a bound the verifier keeps through the helper call (it loses the one on copied_len) */
    asm volatile("%0 &= 0x7fff" : "+r"(size));
    if (size > sizeof(chunk->ev))
        size = sizeof(chunk->ev);
    emit(&chunk->ev, size);
}

/* Does this exchange open with the HTTP/2 client preface ("PRI * HTTP/2.0")? */
static __always_inline int opens_with_preface(struct conn_state *conn) {
    return conn->ev.request_len >= 4 && conn->ev.request[0] == 'P' &&
           conn->ev.request[1] == 'R' && conn->ev.request[2] == 'I' && conn->ev.request[3] == ' ';
}

/* A connection older than the agent whose frames user space recognised (it marked it): what
 * was paired so far goes up as an exchange, and from this syscall on it is chunks. Only
 * seeded connections are checked: new ones show their preface. */
static __always_inline int marked_h2(struct conn_state *conn) {
    if (!(conn->ev.flags & EXCHANGE_F_SEEDED))
        return 0;
    __u64 key = conn_key_of(conn->ev.pid, conn->ev.fd);
    if (!h2_marks.lookup(&key))
        return 0;
    h2_marks.delete(&key);
    if (conn->phase != PHASE_IDLE)
        finish_exchange(conn, 0);
    conn->h2 = H2_RAW; /* joined mid-stream: where frames start is not known */
    return 1;
}

/* Data moved on a tracked connection: pair it into the exchange in progress. */
static __always_inline void on_data(struct conn_state *conn, const struct io_args *io,
                                    __u64 bytes, __u64 pid_tgid, __u64 now) {
    if (conn->ev.role == ROLE_UNKNOWN) {
        /* A connection older than the agent, whose role /proc could not tell: servers read
         * the request first, clients write it. */
        conn->ev.role = io->dir == DIR_INGRESS ? ROLE_SERVER : ROLE_CLIENT;
        conn->ev.flags |= EXCHANGE_F_ROLE_INFERRED;
    }
    if (conn->h2 || marked_h2(conn)) {
        emit_h2_chunk(conn, io, bytes, pid_tgid, 0, 0);
        return;
    }
    int is_request = (conn->ev.role == ROLE_SERVER) == (io->dir == DIR_INGRESS);
    int starts_exchange = is_request && conn->phase != PHASE_REQUEST;

    if (is_request) {
        if (conn->phase == PHASE_RESPONSE)
            finish_exchange(conn, 0);
        if (conn->phase == PHASE_IDLE) {
            conn->phase = PHASE_REQUEST;
            conn->ev.start_ns = now;
            conn->ev.tid = (__u32)pid_tgid;
        }
        conn->ev.request_bytes += bytes;
    } else {
        if (conn->phase == PHASE_IDLE) {
            /* Joined in the middle of a response: wait for the next request. */
            count(COUNTER_ORPHAN_BYTES);
            return;
        }
        if (conn->phase != PHASE_RESPONSE) {
            __u64 *mark = answered_mark(conn);
            if (mark)
                *mark = conn_key_of(conn->ev.pid, conn->ev.fd);
        }
        conn->phase = PHASE_RESPONSE;
        conn->ev.response_bytes += bytes;
        conn->ev.end_ns = now;
    }

    if (io->kind == IO_FLAT) {
        append_flat(conn, is_request, io->buf, bytes);
    } else if (io->kind == IO_IOVEC || io->kind == IO_MSG) {
        /* one call for both kinds: each inlined copy of the slice loop costs the verifier
         * about a third of its budget for this program */
        const struct iovec *iov = (const struct iovec *)io->buf;
        __u64 iovcnt = io->iovcnt;
        if (io->kind == IO_MSG) {
            struct user_msghdr msg = {};
            iovcnt = 0;
            if (bpf_probe_read_user(&msg, sizeof(msg), io->buf) == 0) {
                iov = msg.msg_iov;
                iovcnt = msg.msg_iovlen;
            }
        }
        append_iovec(conn, is_request, iov, iovcnt, bytes);
    }

    if (starts_exchange && opens_with_preface(conn)) {
        /* frames after the 24-byte preface are walked; a preface cut short goes raw */
        int walk = bytes >= 24;
        conn->h2 = walk ? H2_WALK : H2_RAW;
        drop_exchange(conn);
        emit_h2_chunk(conn, io, bytes, pid_tgid, 0, walk ? 24 : 0);
    }
}

/* The connection is closed: its exchange in progress (or its HTTP/2 stream of chunks) ends. */
static __always_inline void forget_sock(struct conn_state *conn, __u64 key);

static __always_inline void close_conn(struct conn_state *conn, __u64 key, __u64 pid_tgid) {
    if (conn->h2)
        emit_h2_chunk(conn, NULL, 0, pid_tgid, CHUNK_F_CLOSED, 0);
    else if (conn->phase != PHASE_IDLE)
        finish_exchange(conn, EXCHANGE_F_CLOSED);
    forget_sock(conn, key);
    conns.delete(&key); /* finish_exchange took its answered mark */
}

/* Start tracking a connection; its fields are filled by the caller. A connection still
 * tracked under its key had its close go unseen (close_range(), dup2(), a socket shared with
 * another process): the descriptor names another connection now, so the old one is closed. */
static __always_inline struct conn_state *new_conn(__u64 key, __u8 role) {
    struct conn_state *old = conns.lookup(&key);
    if (old)
        close_conn(old, key, bpf_get_current_pid_tgid());
    __u32 zero = 0;
    struct conn_state *blank = zero_conn.lookup(&zero);
    if (!blank)
        return NULL;
    if (conns.update(&key, blank)) {
        count(COUNTER_CONN_FULL);
        return NULL;
    }
    struct conn_state *conn = conns.lookup(&key);
    if (!conn)
        return NULL;
    __u64 *next_id = conn_ids.lookup(&zero);
    conn->ev.conn_id = next_id ? __sync_fetch_and_add(next_id, 1) + 1 : 0;
    conn->ev.type = EVENT_EXCHANGE;
    conn->ev.pid = key >> 32;
    conn->ev.fd = (__u32)key;
    conn->ev.role = role;
    /* The command name its events carry, read once here, in its process, rather than at every
     * exchange: a helper call less a request (about 60 ns in this VM), and an exchange the
     * agent's idle flush ends no longer carries the agent's name. A connection seeded from
     * /proc has its process's name from there. */
    bpf_get_current_comm(&conn->ev.comm, sizeof(conn->ev.comm));
    return conn;
}

/* ======================================= 2. socket system calls, process lifecycle */

/* otelbpf socket probes' logic: connect, accept, read, write and friends, paired in the kernel.
 *
 * Hooks the socket system calls (through syscall tracepoints, or kprobes where the kernel has
 * them), or, in socket mode, no system call at all (the socket tracepoints below), and keeps
 * per-connection state in the conns map, keyed by (pid, fd); the pairing itself is on_data
 * above. Reads syscall arguments, tracepoint fields and user memory; struct sock only through
 * sk_endpoints and sk_of_fd, at offsets from the running kernel's BTF.
 */

/* ---------------------------------------------------------------- syscall handlers */

/* A socket call on a tracked connection, as its thread's TLS state sees it: the socket it
 * read last is noted (for TLS stacks whose I/O is outside their calls, see tls_conn), and a
 * call inside a TLS library call binds the session to the socket. Returns 1 when the call
 * moves ciphertext, which the library hook sees as plaintext. */
static __always_inline int socket_call_is_ciphertext(struct thread_state *thread,
                                                     struct conn_state *conn, __u32 tgid,
                                                     __u32 fd, __u8 dir) {
    if (dir == DIR_INGRESS) {
        thread->last_read_fd = fd;
        thread->flags |= THREAD_READ_ONE;
    }
    if (!(thread->flags & THREAD_IN_TLS) && !conn->tls)
        return 0;
    if (thread->flags & THREAD_IN_TLS)
        bind_tls(tgid, thread->tls_session, fd, conn);
    return 1;
}

static __always_inline int io_enter(__s32 nr, __u64 fd, const void *buf, __u64 iovcnt,
                                    __u8 kind, __u8 dir) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (!is_traced(tgid))
        return 0;
    __u64 key = conn_key_of(tgid, fd);
    struct conn_state *conn = conns.lookup(&key);
    if (!conn) {
        /* The agent may have left an entry for a call it found blocked at start-up (see
         * seed_blocked_calls in otelbpf/connections.py) that ended unseen: never let it
         * stand for this call. Looked for once there are such entries, and always with
         * kprobes: a kretprobe can miss its return (too many threads blocked at once), and
         * without the syscall number (nr -1) the exit cannot tell a stale entry from its own. */
        if (nr < 0 || setting(SETTING_SEEDED_CALLS)) {
            struct thread_state *seeded = threads.lookup(&pid_tgid);
            if (seeded)
                seeded->io.conn_key = 0;
        }
        return 0;
    }
    /* A thread's entry lives as long as the thread: a call in flight is a nonzero
     * io.conn_key, written in place. A map update and a delete per system call cost nginx
     * 0.7 us a request more (bpf_stats, this VM) than a lookup and two stores; separate maps
     * for the last socket read and the TLS call cost two lookups more. Every return below
     * leaves the entry idle or holding this call. */
    struct thread_state *thread = thread_of(pid_tgid);
    if (!thread)
        return 0;
    if (socket_call_is_ciphertext(thread, conn, tgid, fd, dir)) {
        thread->io.conn_key = 0;
        return 0;
    }
    struct io_args io = {
        .conn_key = key, .buf = buf, .iovcnt = iovcnt, .kind = kind, .dir = dir, .nr = nr};
    thread->io = io;
    return 0;
}

static __always_inline int io_exit(__s32 nr, __s64 ret) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    /* no is_traced(): only a traced call's entry filled the thread's entry (a filter here
     * took the verifier's walk of this program from 886k to 917k instructions) */
    struct thread_state *thread = threads.lookup(&pid_tgid);
    if (!thread || !thread->io.conn_key)
        return 0;
    struct io_args io = thread->io;
    thread->io.conn_key = 0; /* consumed: the entry stays, for the thread's next call */
    if (io.nr >= 0 && nr >= 0 && io.nr != nr)
        return 0; /* left by another call */
    if (ret <= 0)
        return 0;
    struct conn_state *conn = conns.lookup(&io.conn_key);
    if (conn)
        on_data(conn, &io, (__u64)ret, pid_tgid, bpf_ktime_get_ns());
    return 0;
}

#ifdef IO_ARGS_AT_EXIT
/* Tracepoints on a kernel with bpf_task_pt_regs: a read or write has no entry hook. Its exit
 * reads the arguments from the registers the task entered the kernel with, which the kernel
 * keeps unchanged until it returns, so a call costs one hook and two lookups (connection,
 * thread) where the entry and exit took two hooks and four; a call blocked when tracing began
 * needs no seeding either. Per request at 4k req/s (bpf_stats, A/B): BPF 4.22 -> 3.59 us. */
#include <asm/unistd.h>

/* The system call the current task is in: its number and first three arguments, from
 * x86-64's struct pt_regs (orig_ax; di, si, dx), as the task entered the kernel. Plain loads
 * the verifier checks against the kernel's BTF (bcc would make a dereference a helper call). */
struct user_call {
    __s64 nr;
    __u64 fd;
    __u64 buf;
    __u64 count;
};
static __always_inline struct user_call current_call(void) {
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    struct user_call call;
    asm volatile("%0 = *(u64 *)(%1 + 120)" : "=r"(call.nr) : "r"(regs));
    asm volatile("%0 = *(u64 *)(%1 + 112)" : "=r"(call.fd) : "r"(regs));
    asm volatile("%0 = *(u64 *)(%1 + 104)" : "=r"(call.buf) : "r"(regs));
    asm volatile("%0 = *(u64 *)(%1 + 96)" : "=r"(call.count) : "r"(regs));
    return call;
}

#ifdef SOCK_TRACEPOINTS
#if !defined(SOCK_OFFSETS)
#error "socket tracepoints read the socket's addresses: SOCK_OFFSETS (the kernel's BTF) is needed"
#endif
static __always_inline struct conn_state *conn_of_sock(__u64 key, const char *sk);
#endif

/* nr: the system call, or -1 to read it from the registers too (socket tracepoints, where sk
 * is the socket the data moved on). */
static __always_inline int io_exit_from_registers(__s32 nr, __s64 ret, const char *sk) {
    if (ret <= 0)
        return 0;
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (!is_traced(tgid))
        return 0;
    struct user_call call = current_call();
    __u64 fd = call.fd;
    if (nr < 0)
        nr = call.nr;
    __u8 kind, dir;
    /* one line a syscall group, as the entry points below are written */
    switch (nr) {
    case __NR_read: case __NR_recvfrom: kind = IO_FLAT, dir = DIR_INGRESS; break;
    case __NR_readv: kind = IO_IOVEC, dir = DIR_INGRESS; break;
    case __NR_recvmsg: kind = IO_MSG, dir = DIR_INGRESS; break;
    case __NR_write: case __NR_sendto: kind = IO_FLAT, dir = DIR_EGRESS; break;
    case __NR_writev: kind = IO_IOVEC, dir = DIR_EGRESS; break;
    case __NR_sendmsg: kind = IO_MSG, dir = DIR_EGRESS; break;
    case __NR_sendfile: kind = IO_SIZE_ONLY, dir = DIR_EGRESS; break;
    default:
        return 0; /* (recvmmsg, io_uring, a kernel socket: not paired) */
    }
    __u64 key = conn_key_of(tgid, fd);
#ifdef SOCK_TRACEPOINTS
    struct conn_state *conn = conn_of_sock(key, sk);
#else
    struct conn_state *conn = conns.lookup(&key);
#endif
    if (!conn)
        return 0;
    struct thread_state *thread = thread_of(pid_tgid);
    if (!thread)
        return 0;
    if (socket_call_is_ciphertext(thread, conn, tgid, fd, dir))
        return 0;
    struct io_args io = {
        .conn_key = key, .buf = (void *)call.buf, .iovcnt = call.count, .kind = kind, .dir = dir,
        .nr = nr};
    thread->io = io;
    /* on_data reads the call back from map memory, where the verifier sees one unknown kind
     * and direction: given the constants, it walked on_data once per case, past its limit */
    asm volatile("" ::: "memory");
    on_data(conn, &thread->io, (__u64)ret, pid_tgid, bpf_ktime_get_ns());
    return 0;
}
#endif

static __always_inline int socket_enter(__u64 type) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!is_traced(pid_tgid >> 32))
        return 0;
    struct socket_args args = {.type = type};
    pending_socket.update(&pid_tgid, &args);
    return 0;
}

static __always_inline int socket_exit(__s64 ret) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    struct socket_args *args = pending_socket.lookup(&pid_tgid);
    if (!args)
        return 0;
    __u32 type = args->type & SOCK_TYPE_MASK;
    pending_socket.delete(&pid_tgid);
    if (ret < 0)
        return 0;
    __u64 key = conn_key_of(pid_tgid >> 32, ret);
    struct socket_facts facts = {.type = type};
    sockets.update(&key, &facts);
    return 0;
}

static __always_inline int bind_enter(__u64 fd, const void *uaddr) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    struct endpoint ep = {};
    if (read_sockaddr(uaddr, &ep))
        return 0;
    if (port_selected(ep.port))
        allow(tgid);
    if (!is_traced(tgid))
        return 0;
    __u64 key = conn_key_of(tgid, fd);
    struct socket_facts *facts = sockets.lookup(&key);
    if (facts) {
        facts->bound = ep;
    } else {
        struct socket_facts made = {.bound = ep};
        sockets.update(&key, &made);
    }
    return 0;
}

/* The agent's own exporter connecting: the agent learns its new local port before a traced
 * collector can show it the exchange (events keep their order). */
static __always_inline int agent_connecting(__u32 tgid, __u64 fd) {
    struct address_request notice = {.type = EVENT_AGENT_CONNECT, .pid = tgid, .fd = fd};
    events.ringbuf_output(&notice, sizeof(notice), BPF_RB_FORCE_WAKEUP);
    return 0;
}

static __always_inline int connect_enter(__u64 fd, const void *uaddr) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (tgid == agent_tgid())
        return agent_connecting(tgid, fd);
    struct connect_args args = {.fd = fd};
    if (read_sockaddr(uaddr, &args.peer))
        return 0;
    if (port_selected(args.peer.port))
        allow(tgid);
    if (!is_traced(tgid))
        return 0;
    __u64 key = conn_key_of(tgid, fd);
    struct socket_facts *facts = sockets.lookup(&key);
    if (facts && facts->type && facts->type != SOCK_STREAM_TYPE)
        return 0; /* UDP "connections" are not request/response streams we pair */
    pending_connect.update(&pid_tgid, &args);
    return 0;
}

static __always_inline int connect_exit(__s64 ret) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    struct connect_args *pending = pending_connect.lookup(&pid_tgid);
    if (!pending)
        return 0;
    struct connect_args args = *pending;
    pending_connect.delete(&pid_tgid);
    if (ret != 0 && ret != -EINPROGRESS_ERR)
        return 0;
    __u64 key = conn_key_of(pid_tgid >> 32, args.fd);
    struct conn_state *conn = new_conn(key, ROLE_CLIENT);
    if (conn) {
        conn->ev.peer = args.peer;
        struct socket_facts *facts = sockets.lookup(&key);
        if (facts && facts->bound.family)
            conn->ev.local = facts->bound;
    }
    return 0;
}

static __always_inline int accept_enter(__s32 nr, __u64 listen_fd, const void *peer_addr) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!is_traced(pid_tgid >> 32))
        return 0;
    struct accept_args args = {.listen_fd = listen_fd, .peer_addr = peer_addr, .nr = nr};
    pending_accept.update(&pid_tgid, &args);
    return 0;
}

#ifdef SOCK_OFFSETS
/* The addresses of a socket, from the kernel's struct sock at offsets taken from the running
 * kernel's BTF (otelbpf/probes/kernel_layout.py): with sk_of_fd below, the one place this file
 * reads kernel structs. */
static __always_inline int sk_endpoints(const char *sk, struct endpoint *local, struct endpoint *peer) {
    __u16 family = 0, dport = 0, num = 0;
    if (bpf_probe_read_kernel(&family, sizeof(family), sk + OFF_SK_FAMILY))
        return -1;
    if (family == AF_INET) {
        if (bpf_probe_read_kernel(peer->addr, 4, sk + OFF_SK_DADDR) ||
            bpf_probe_read_kernel(local->addr, 4, sk + OFF_SK_RCV_SADDR))
            return -1;
    } else if (family == AF_INET6) {
        if (bpf_probe_read_kernel(peer->addr, 16, sk + OFF_SK_V6_DADDR) ||
            bpf_probe_read_kernel(local->addr, 16, sk + OFF_SK_V6_RCV_SADDR))
            return -1;
    } else {
        return -1;
    }
    if (bpf_probe_read_kernel(&dport, sizeof(dport), sk + OFF_SK_DPORT) ||
        bpf_probe_read_kernel(&num, sizeof(num), sk + OFF_SK_NUM))
        return -1;
    peer->port = bpf_ntohs(dport); /* skc_dport is in network order, skc_num in host order */
    local->port = num;
    peer->family = local->family = family;
    return 0;
}

/* The struct sock behind this task's descriptor fd (task -> files -> fdtable -> file ->
 * socket -> sock): read when accept() was given no address buffer, and in socket mode once
 * per connection, at its first data (conn_of_sock). */
static __always_inline char *sk_of_fd(__u32 fd) {
    char *task = (char *)bpf_get_current_task();
    char *files = NULL, *fdt = NULL, *fds = NULL, *file = NULL, *sock = NULL, *sk = NULL;
    __u32 max_fds = 0;
    if (bpf_probe_read_kernel(&files, sizeof(files), task + OFF_TASK_FILES) || !files)
        return NULL;
    if (bpf_probe_read_kernel(&fdt, sizeof(fdt), files + OFF_FILES_FDT) || !fdt)
        return NULL;
    if (bpf_probe_read_kernel(&max_fds, sizeof(max_fds), fdt + OFF_FDT_MAX_FDS) || fd >= max_fds)
        return NULL;
    if (bpf_probe_read_kernel(&fds, sizeof(fds), fdt + OFF_FDT_FD) || !fds)
        return NULL;
    if (bpf_probe_read_kernel(&file, sizeof(file), fds + (__u64)fd * sizeof(void *)) || !file)
        return NULL;
    if (bpf_probe_read_kernel(&sock, sizeof(sock), file + OFF_FILE_PRIVATE_DATA) || !sock)
        return NULL;
    if (bpf_probe_read_kernel(&sk, sizeof(sk), sock + OFF_SOCKET_SK))
        return NULL;
    return sk;
}
#endif

static __always_inline int accept_exit(__s32 nr, __s64 ret) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    struct accept_args *pending = pending_accept.lookup(&pid_tgid);
    if (!pending)
        return 0;
    struct accept_args args = *pending;
    pending_accept.delete(&pid_tgid);
    if (args.nr >= 0 && nr >= 0 && args.nr != nr)
        return 0;
    if (ret < 0)
        return 0;
    __u32 tgid = pid_tgid >> 32;
    struct endpoint peer = {};
    if (args.peer_addr && read_sockaddr(args.peer_addr, &peer))
        return 0; /* a Unix-domain or other non-IP peer */
    __u64 key = conn_key_of(tgid, ret);
    struct conn_state *conn = new_conn(key, ROLE_SERVER);
    if (!conn)
        return 0;
    conn->ev.peer = peer;
    __u64 listen_key = conn_key_of(tgid, args.listen_fd);
    struct socket_facts *listener = sockets.lookup(&listen_key);
    struct endpoint *local = listener && listener->bound.family ? &listener->bound : NULL;
    if (local)
        conn->ev.local = *local;
    if (!local || !peer.family) {
        /* accept(fd, NULL, NULL) (libuv does it), or a listener bound before tracing in a
         * process that forked: the socket itself says, where BTF gave its layout; if not,
         * user space reads the addresses from /proc while the connection lives */
#ifdef SOCK_OFFSETS
        struct endpoint sock_local = {}, sock_peer = {};
        char *sk = sk_of_fd(ret);
        if (sk && sk_endpoints(sk, &sock_local, &sock_peer) == 0) {
            conn->ev.local = sock_local;
            conn->ev.peer = sock_peer;
            return 0;
        }
#endif
        struct address_request request = {
            .type = EVENT_ADDRESS_REQUEST, .pid = tgid, .fd = ret, .conn_id = conn->ev.conn_id};
        events.ringbuf_output(&request, sizeof(request), BPF_RB_FORCE_WAKEUP);
    }
    return 0;
}

/* close(fd). sk_key, where the probe knows the socket closed (socket tracepoints), must be the
 * connection's: 0 takes any. */
static __always_inline int close_enter(__u64 fd, __u64 sk_key) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (!is_traced(tgid))
        return 0;
    __u64 key = conn_key_of(tgid, fd);
    struct conn_state *conn = conns.lookup(&key);
    if (conn && (!sk_key || !conn->sk || conn->sk == sk_key))
        close_conn(conn, key, pid_tgid);
    /* looked up first: a delete takes the bucket's lock even for a key that is not there,
     * and most closes are of files (nginx closes the file it sent on every request) */
    if (sockets.lookup(&key))
        sockets.delete(&key);
    return 0;
}

/* A traced process mapped a file as code (a library loaded by dlopen, `import ssl`): the
 * agent looks for TLS libraries in it. Only the pid is sent; the agent reads /proc. Told by
 * mmap(PROT_EXEC) where system calls are hooked, and by the dynamic loader's
 * _dl_debug_state() where none is (socket tracepoints). */
static __always_inline int code_mapped(void) {
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!is_traced(tgid))
        return 0;
    __u32 zero = 0;
    struct process_event *event = process_scratch.lookup(&zero);
    if (!event)
        return 0;
    event->type = EVENT_MMAP_EXEC;
    event->pid = tgid;
    event->ppid = 0;
    event->comm[0] = 0;
    event->filename[0] = 0;
    events.ringbuf_output(event, sizeof(*event), BPF_RB_FORCE_WAKEUP);
    return 0;
}

static __always_inline int mmap_enter(__u64 prot, __s64 fd) {
    if (!(prot & 0x4) || fd < 0) /* PROT_EXEC of a file */
        return 0;
    return code_mapped();
}

/* The agent pulls this trigger (run_flush, run on request, or a getppid() call of its own
 * where the kernel cannot run a program on request) after filling the flush queue:
 * exchanges idle past SETTING_IDLE_NS, or forced ones, are emitted here, in the kernel, so
 * the sweep never races with the probes over a connection's state. */
static __always_inline int flush_trigger(void) {
    if ((bpf_get_current_pid_tgid() >> 32) != agent_tgid())
        return 0;
    __u64 entries = setting(SETTING_FLUSH_COUNT);
    __u64 idle_ns = setting(SETTING_IDLE_NS);
    __u64 now = bpf_ktime_get_ns();
    for (__u32 i = 0; i < FLUSH_QUEUE_SIZE; i++) {
        if (i >= entries)
            break;
        __u32 index = i;
        struct flush_request *request = flush_queue.lookup(&index);
        if (!request)
            break;
        __u64 key = request->conn_key;
        __u32 slot = request->slot;
        struct conn_state *conn = conns.lookup(&key);
        if (conn && conn->phase != PHASE_IDLE &&
            (request->force ||
             (conn->phase == PHASE_RESPONSE && conn->ev.end_ns + idle_ns <= now)))
            finish_exchange(conn, EXCHANGE_F_IDLE); /* which clears its mark */
        /* a mark whose connection is gone (forgotten with its process) or no longer answered
         * (its fd reused by a new connection) goes too: probes clear only their own */
        if (slot < ANSWERED_SLOTS && (!conn || conn->phase != PHASE_RESPONSE)) {
            __u64 *mark = answered.lookup(&slot);
            if (mark && *mark == key)
                *mark = 0;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- socket tracepoints
 * Where the kernel has BTF and bpf_task_pt_regs (x86-64), no system call is hooked at all:
 * while any syscall tracepoint has a program, every system call of every task takes the
 * kernel's slow path in and out (measured here: +220 to +280 ns a call, bench/FINDINGS.md 4).
 * Data comes from sock:sock_send_length and sock:sock_recv_length, which fire inside the
 * socket's send and receive only, and the call's descriptor and buffers from the task's user
 * registers as at a syscall exit; connect, listen, accept and close from the TCP state
 * changes of sock:inet_sock_set_state. */
#ifdef SOCK_TRACEPOINTS
/* Records laid out as tracefs's format files give them (tests/unit/test_abi.py checks). */
struct sock_length_ctx {
    __u64 common;
    const char *sk;
    __u16 family;
    __u16 protocol;
    __s32 ret;
    __s32 flags;
};
struct inet_sock_state_ctx {
    __u64 common;
    const char *skaddr;
    __s32 oldstate;
    __s32 newstate;
    __u16 sport; /* host order */
    __u16 dport;
    __u16 family;
    __u16 protocol;
    __u8 saddr[4];
    __u8 daddr[4];
    __u8 saddr_v6[16];
    __u8 daddr_v6[16];
};
#define PROTO_TCP 6
#define RECV_PEEK 2 /* MSG_PEEK: the bytes stay queued, to be read again */
enum tcp_state_nr {
    ST_ESTABLISHED = 1, ST_SYN_SENT = 2, ST_SYN_RECV = 3, ST_FIN_WAIT1 = 4, ST_CLOSE = 7,
    ST_CLOSE_WAIT = 8, ST_LAST_ACK = 9, ST_LISTEN = 10,
};

/* Sockets a listener accepted (their handshake completed, in softirq, where no process is
 * known), until a traced process moves data on one: its connection is then a server's. LRU:
 * the accepted connections of untraced processes age out. */
BPF_TABLE("lru_hash", __u64, __u8, accepted_socks, 16384);
/* The connection (its conns key) each tracked socket is, so that a socket accepted at the
 * address of one whose close went unseen (close_range(), dup2(), a socket shared with another
 * process; its memory freed and reused) is not taken for it: that connection's socket is
 * marked gone, and its descriptor's next data replaces it (new_conn emits its exchange). */
BPF_TABLE("lru_hash", __u64, __u64, sock_conns, MAX_CONNS);
#define SK_GONE 1 /* conn_state.sk of a connection whose socket was freed: no socket's address */

static __always_inline void forget_sock(struct conn_state *conn, __u64 key) {
    __u64 sk_key = conn->sk;
    __u64 *tracked = sk_key > SK_GONE ? sock_conns.lookup(&sk_key) : NULL;
    if (tracked && *tracked == key)
        sock_conns.delete(&sk_key);
}

/* The connection behind this process's descriptor, made at its first data: an accepted
 * socket's is a server's; one whose start was not seen (opened before tracing, not found in
 * /proc) has its role inferred from its first data (on_data). A connection whose close went
 * unseen is replaced when its descriptor names another socket (new_conn emits its exchange). */
static __always_inline struct conn_state *conn_of_sock(__u64 key, const char *sk) {
    struct conn_state *conn = conns.lookup(&key);
    __u64 sk_key = (__u64)sk;
    if (conn && conn->sk == sk_key) {
        if (!conn->ev.local.port) /* a client's port is chosen after the connect seen */
            sk_endpoints(sk, &conn->ev.local, &conn->ev.peer);
        return conn;
    }
    if (conn && !conn->sk) { /* seeded from /proc */
        conn->sk = sk_key;
        sock_conns.update(&sk_key, &key);
        return conn;
    }
    /* The descriptor must be this socket's: a network file system sends and receives on its
     * own sockets inside a read() or write() of a file. */
    if (sk_of_fd((__u32)key) != sk)
        return NULL;
    __u8 role = ROLE_UNKNOWN;
    if (accepted_socks.lookup(&sk_key)) {
        role = ROLE_SERVER;
        accepted_socks.delete(&sk_key);
    }
    conn = new_conn(key, role);
    if (!conn)
        return NULL;
    conn->sk = sk_key;
    sock_conns.update(&sk_key, &key);
    sk_endpoints(sk, &conn->ev.local, &conn->ev.peer);
    return conn;
}

static __always_inline int sock_data(struct sock_length_ctx *ctx) {
    if (ctx->protocol != PROTO_TCP || (ctx->flags & RECV_PEEK))
        return 0;
    if (ctx->family != AF_INET && ctx->family != AF_INET6)
        return 0;
    return io_exit_from_registers(-1, ctx->ret, ctx->sk);
}

static __always_inline void state_endpoints(struct inet_sock_state_ctx *ctx,
                                            struct endpoint *local, struct endpoint *peer) {
    if (ctx->family == AF_INET) {
        __builtin_memcpy(local->addr, ctx->saddr, 4);
        __builtin_memcpy(peer->addr, ctx->daddr, 4);
    } else {
        __builtin_memcpy(local->addr, ctx->saddr_v6, 16);
        __builtin_memcpy(peer->addr, ctx->daddr_v6, 16);
    }
    local->port = ctx->sport; /* 0 until connect() chooses it, right after this change */
    peer->port = ctx->dport;
    local->family = peer->family = ctx->family;
}

/* CLOSE -> SYN_SENT: a connect() (or a sendto() with MSG_FASTOPEN), in its caller's context. */
static __always_inline int sock_connect(struct inet_sock_state_ctx *ctx) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    struct user_call call = current_call();
    if (call.nr != __NR_connect && call.nr != __NR_sendto && call.nr != __NR_sendmsg)
        return 0;
    if (tgid == agent_tgid())
        return agent_connecting(tgid, call.fd);
    struct endpoint local = {}, peer = {};
    state_endpoints(ctx, &local, &peer);
    if (port_selected(peer.port))
        allow(tgid);
    if (!is_traced(tgid))
        return 0;
    __u64 key = conn_key_of(tgid, call.fd);
    struct conn_state *conn = new_conn(key, ROLE_CLIENT);
    if (conn) {
        conn->ev.local = local;
        conn->ev.peer = peer;
        conn->sk = (__u64)ctx->skaddr;
        sock_conns.update(&conn->sk, &key);
    }
    return 0;
}

/* ESTABLISHED or CLOSE_WAIT -> FIN_WAIT1, LAST_ACK or CLOSE, in a close() of a traced
 * process: its connection ends now. The socket must be the connection's, as a softirq that
 * runs on the way out of some process's close() changes other sockets' states. A socket that
 * reached CLOSE earlier (a reset; a half-closed client's, once the peer's FIN came) changes no
 * state at its close(): its connection is replaced when the descriptor is reused, and its
 * answered exchange emitted by the idle sweep meanwhile. Its queued data may still be read,
 * so reaching CLOSE does not end the connection. */
static __always_inline int sock_close(__u64 sk_key) {
    /* the filter first: every TCP close on the host comes here, most of them untraced, and
     * reading the registers is a helper call (close_enter filters again: one inlined load) */
    if (!is_traced(bpf_get_current_pid_tgid() >> 32))
        return 0;
    struct user_call call = current_call();
    return call.nr == __NR_close ? close_enter(call.fd, sk_key) : 0;
}

static __always_inline int sock_state(struct inet_sock_state_ctx *ctx) {
    if (ctx->protocol != PROTO_TCP)
        return 0;
    __s32 from = ctx->oldstate, to = ctx->newstate;
    __u64 sk_key = (__u64)ctx->skaddr;
    if (to == ST_SYN_SENT)
        return sock_connect(ctx);
    if (to == ST_LISTEN) { /* listen(), in its caller's context: --port selects servers */
        if (port_selected(ctx->sport))
            allow(bpf_get_current_pid_tgid() >> 32);
        return 0;
    }
    if (from == ST_SYN_RECV && to == ST_ESTABLISHED) {
        __u8 one = 1;
        accepted_socks.update(&sk_key, &one);
        __u64 *stale = sock_conns.lookup(&sk_key); /* a connection still on this address */
        if (stale) {
            __u64 key = *stale;
            struct conn_state *conn = conns.lookup(&key);
            if (conn && conn->sk == sk_key)
                conn->sk = SK_GONE;
            sock_conns.delete(&sk_key);
        }
        return 0;
    }
    if (to == ST_CLOSE && accepted_socks.lookup(&sk_key)) /* never read by a traced process */
        accepted_socks.delete(&sk_key);
    if ((from == ST_ESTABLISHED || from == ST_CLOSE_WAIT) &&
        (to == ST_FIN_WAIT1 || to == ST_LAST_ACK || to == ST_CLOSE))
        return sock_close(sk_key);
    return 0;
}
#else
static __always_inline void forget_sock(struct conn_state *conn, __u64 key) {}
#endif

/* ---------------------------------------------------------------- process lifecycle */

/* Tracepoint records, laid out as tracefs's format files give them (checked by
 * tests/unit/test_abi.py against the running kernel). */
struct task_newtask_ctx {
    __u64 common;
    __s32 pid;
    char comm[TASK_COMM_LEN];
    __u32 _pad;
    __u64 clone_flags;
};
struct sched_process_exec_ctx {
    __u64 common;
    __u32 data_loc_filename; /* offset in the low 16 bits, length in the high 16 */
    __s32 pid;
    __s32 old_pid;
};

/* A traced process's children are traced from their first instruction, in the kernel, so
 * nothing they do before user space hears of them is missed. */
static __always_inline int task_newtask(struct task_newtask_ctx *args) {
    if (args->clone_flags & CLONE_THREAD)
        return 0;
    __u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (!marked_traced(parent)) /* (in trace-all an unmarked parent's child is traced anyway) */
        return 0;
    __u32 child = args->pid;
    allow(child);
    __u32 zero = 0;
    struct process_event *event = process_scratch.lookup(&zero);
    if (!event)
        return 0;
    event->type = EVENT_FORK;
    event->pid = child;
    event->ppid = parent;
    __builtin_memcpy(event->comm, args->comm, TASK_COMM_LEN);
    event->filename[0] = 0;
    events.ringbuf_output(event, sizeof(*event), BPF_RB_FORCE_WAKEUP);
    return 0;
}

static __always_inline int process_exec(struct sched_process_exec_ctx *args) {
    __u32 zero = 0;
    struct process_event *event = process_scratch.lookup(&zero);
    if (!event)
        return 0;
    event->type = EVENT_EXEC;
    event->pid = bpf_get_current_pid_tgid() >> 32;
    if (event->pid == agent_tgid())
        return 0;
    event->ppid = 0;
    bpf_get_current_comm(&event->comm, sizeof(event->comm));
    /* an --exe selector that is a plain name is matched here, before the program runs a
     * single instruction: a client that lives a few milliseconds is still traced whole */
    struct comm_key name = {};
    __builtin_memcpy(name.comm, event->comm, TASK_COMM_LEN);
    if (selector_comms.lookup(&name))
        allow(event->pid);
    unsigned short offset = args->data_loc_filename & 0xFFFF;
    bpf_probe_read_kernel_str(event->filename, sizeof(event->filename), (char *)args + offset);
    events.ringbuf_output(event, sizeof(*event), BPF_RB_FORCE_WAKEUP);
    return 0;
}

static __always_inline int process_exit(void) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    /* every thread that ends (the tracepoint fires for each): its per-thread entries go;
     * looked up first, as a delete takes the bucket's lock even for a missing key */
    if (threads.lookup(&pid_tgid))
        threads.delete(&pid_tgid);
    if (tls_calls.lookup(&pid_tgid)) /* a thread that ended inside a TLS library call */
        tls_calls.delete(&pid_tgid);
    if ((__u32)pid_tgid != tgid || !is_traced(tgid)) /* every traced process, in trace-all too */
        return 0;
    __u32 zero = 0;
    struct process_event *event = process_scratch.lookup(&zero);
    if (!event)
        return 0;
    event->type = EVENT_EXIT;
    event->pid = tgid;
    event->ppid = 0;
    bpf_get_current_comm(&event->comm, sizeof(event->comm));
    event->filename[0] = 0;
    events.ringbuf_output(event, sizeof(*event), BPF_RB_FORCE_WAKEUP);
    return 0;
}

/* ================================================================ 3. TLS library calls */

/* otelbpf TLS uprobes' logic: the plaintext at the TLS library boundary, fed into the same pairing.
 *
 * OpenSSL 1.1/3 and BoringSSL (SSL_read, SSL_write, SSL_read_ex, SSL_write_ex, shared or linked
 * into the executable), GnuTLS (gnutls_record_recv/send), and Go's crypto/tls
 * ((*Conn).Read/Write, register ABI).
 *
 * Each library call is tied to its socket: for the C libraries through the socket syscall made
 * inside the call on the same thread (bind_tls binds the session to that fd), or, for stacks
 * whose socket I/O happens outside their calls (Node.js drives OpenSSL through memory BIOs),
 * through the last socket the thread read. Go's fd is read from the tls.Conn itself.
 * Reads only uprobe registers and user memory.
 */

/* A non-blocking write that failed (WANT_WRITE) is repeated with the same arguments: it was
 * counted at its first entry, so the repeat must not count it again. LRU: a process that
 * exits between the failure and the repeat leaves its entry behind. */
struct tls_retry {
    const void *buf;
    __u64 length;
};
BPF_TABLE("lru_hash", struct tls_session_key, struct tls_retry, tls_retries, 4096);

/* Writes count at entry: the plaintext is all there, and the order of events then follows
 * the order on the wire. Counted at the return, a write preempted before its return probe
 * could land after the peer's answer to it (seen on a loaded machine). A session not yet tied
 * to its socket waits for the return, when the socket call inside the write has tied it. */
static __always_inline int tls_count_write(__u32 tgid, __u64 session, const void *buf,
                                           __u64 length, __u64 pid_tgid) {
    struct tls_session_key key = {.tgid = tgid, .session = session};
    struct tls_binding *binding = tls_fds.lookup(&key);
    if (!binding || length == 0)
        return 0;
    struct tls_retry *retry = tls_retries.lookup(&key);
    if (retry && retry->buf == buf && retry->length == length) {
        tls_retries.delete(&key);
        return 1;
    }
    __u64 conn_key = conn_key_of(tgid, binding->fd);
    struct conn_state *conn = conns.lookup(&conn_key);
    if (!conn || conn->ev.conn_id != binding->conn_id)
        return 0; /* a stale binding: counted at the return, once the session is bound */
    struct io_args io = {.buf = buf, .kind = IO_FLAT, .dir = DIR_EGRESS, .nr = -1};
    on_data(conn, &io, length, pid_tgid, bpf_ktime_get_ns());
    return 1;
}

static __always_inline int tls_enter(__u64 session, const void *buf, const void *length_out,
                                     __u8 dir, __u8 int_return, __u64 length) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (!is_traced(tgid))
        return 0;
    struct tls_call call = {.session = session,
                            .buf = buf,
                            .length_out = length_out,
                            .length = length,
                            .entered_ns = bpf_ktime_get_ns(),
                            .dir = dir,
                            .int_return = int_return};
    if (dir == DIR_EGRESS)
        call.counted = tls_count_write(tgid, session, buf, length, pid_tgid);
    tls_calls.update(&pid_tgid, &call);
    struct thread_state *thread = thread_of(pid_tgid);
    if (thread) {
        thread->tls_session = session;
        thread->flags |= THREAD_IN_TLS;
    }
    return 0;
}

static __always_inline struct conn_state *tls_conn(__u32 tgid, __u64 session, __u64 pid_tgid) {
    struct tls_session_key key = {.tgid = tgid, .session = session};
    struct tls_binding *binding = tls_fds.lookup(&key);
    if (binding) {
        __u64 conn_key = conn_key_of(tgid, binding->fd);
        struct conn_state *bound = conns.lookup(&conn_key);
        if (bound && bound->ev.conn_id == binding->conn_id)
            return bound;
        /* stale: the session's memory serves a new connection now, found as below */
    }
    /* No socket call inside any call of this session yet: the stack does its socket I/O
     * outside (memory BIOs). Its ciphertext was read just before on this thread. */
    struct thread_state *thread = threads.lookup(&pid_tgid);
    if (!thread || !(thread->flags & THREAD_READ_ONE))
        return NULL;
    __u32 last = thread->last_read_fd;
    __u64 conn_key = conn_key_of(tgid, last);
    struct conn_state *conn = conns.lookup(&conn_key);
    if (conn)
        bind_tls(tgid, session, last, conn);
    return conn;
}

static __always_inline int tls_exit(__s64 ret) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    /* out of the library call, whether or not its entry was recorded */
    struct thread_state *thread = threads.lookup(&pid_tgid);
    if (thread)
        thread->flags &= ~THREAD_IN_TLS;
    struct tls_call *pending = tls_calls.lookup(&pid_tgid);
    if (!pending)
        return 0;
    struct tls_call call = *pending;
    tls_calls.delete(&pid_tgid);
    if (call.int_return)
        ret = (__s32)ret;
    __u64 bytes = ret > 0 ? ret : 0;
    if (call.length_out) {
        /* SSL_read_ex / SSL_write_ex return 1 on success and the count through a pointer */
        bytes = 0;
        if (ret == 1)
            bpf_probe_read_user(&bytes, sizeof(bytes), call.length_out);
    }
    __u32 tgid = pid_tgid >> 32;
    if (call.counted) {
        if (bytes == 0) {
            struct tls_session_key key = {.tgid = tgid, .session = call.session};
            struct tls_retry retry = {.buf = call.buf, .length = call.length};
            tls_retries.update(&key, &retry);
        }
        return 0;
    }
    if (bytes == 0)
        return 0;
    struct conn_state *conn = tls_conn(tgid, call.session, pid_tgid);
    if (!conn) {
        count(COUNTER_TLS_UNBOUND);
        return 0;
    }
    if (!conn->tls)
        bind_tls(tgid, call.session, conn->ev.fd, conn);
    struct io_args io = {.buf = call.buf, .kind = IO_FLAT, .dir = call.dir, .nr = -1};
    /* a write handed its bytes over when it was called; a read has them when it returns */
    __u64 at = call.dir == DIR_EGRESS ? call.entered_ns : bpf_ktime_get_ns();
    on_data(conn, &io, bytes, pid_tgid, at);
    return 0;
}

/* ---------------------------------------------------------------- Go crypto/tls
 * func (c *Conn) Read(b []byte) (int, error) and Write, register ABI (Go >= 1.17, amd64):
 * c in RAX, b's pointer in RBX; on return n in RAX. The goroutine (R14) may move between
 * threads while it waits, so calls are keyed by goroutine, not thread. Returns are reached
 * with uprobes on each RET instruction of the function: uretprobes rewrite the return address
 * on the stack, which breaks Go's stack growth and unwinding. */

#ifndef GO_TLS_CONN_NET_CONN_DATA
/* tls.Conn starts with conn net.Conn (interface: itab, data); data is *net.TCPConn, whose
 * first word is its *netFD; netFD starts with poll.FD, whose Sysfd follows fdMutex (16 bytes).
 * Stable from Go 1.12 through 1.23; the loader may override them from DWARF. */
#define GO_TLS_CONN_NET_CONN_DATA 8
#define GO_NETFD_SYSFD 16
#endif

struct go_call_key {
    __u32 tgid;
    __u32 _pad;
    __u64 goroutine;
};
struct go_call {
    const void *buf;
    __s64 fd;
    __u8 dir;
    __u8 _pad[7];
};
/* LRU: a goroutine parked in Read when its process exits never returns to delete its call. */
BPF_TABLE("lru_hash", struct go_call_key, struct go_call, go_tls_calls, 16384);

static __always_inline __s64 go_conn_fd(const void *tls_conn) {
    const void *tcp_conn = NULL, *net_fd = NULL;
    __s64 fd = -1;
    if (bpf_probe_read_user(&tcp_conn, sizeof(tcp_conn), tls_conn + GO_TLS_CONN_NET_CONN_DATA) ||
        !tcp_conn)
        return -1;
    if (bpf_probe_read_user(&net_fd, sizeof(net_fd), tcp_conn) || !net_fd)
        return -1;
    if (bpf_probe_read_user(&fd, sizeof(fd), net_fd + GO_NETFD_SYSFD))
        return -1;
    return fd;
}

/* Go's crypto/tls owns this connection's data from now on (see bind_tls). */
static __always_inline void go_tls_own(struct conn_state *conn) {
    if (!conn->tls) {
        conn->tls = 1;
        conn->ev.flags |= EXCHANGE_F_TLS;
        drop_exchange(conn);
    }
}

static __always_inline int go_tls_enter(struct pt_regs *ctx, __u8 dir) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (!is_traced(tgid))
        return 0;
    struct go_call call = {.buf = (void *)ctx->bx, .fd = go_conn_fd((void *)ctx->ax), .dir = dir};
    if (call.fd < 0)
        return 0;
    if (dir == DIR_EGRESS) {
        /* Write sends all of b or fails: count it here, in wire order (see tls_count_write);
         * the slice's length is in RCX */
        __u64 conn_key = conn_key_of(tgid, call.fd);
        struct conn_state *conn = conns.lookup(&conn_key);
        if (conn && ctx->cx > 0) {
            go_tls_own(conn);
            struct io_args io = {.buf = call.buf, .kind = IO_FLAT, .dir = DIR_EGRESS, .nr = -1};
            on_data(conn, &io, ctx->cx, pid_tgid, bpf_ktime_get_ns());
        }
        return 0;
    }
    struct go_call_key key = {.tgid = tgid, .goroutine = ctx->r14};
    go_tls_calls.update(&key, &call);
    return 0;
}

static __always_inline int go_tls_return(struct pt_regs *ctx) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    struct go_call_key key = {.tgid = tgid, .goroutine = ctx->r14};
    struct go_call *pending = go_tls_calls.lookup(&key);
    if (!pending)
        return 0;
    struct go_call call = *pending;
    go_tls_calls.delete(&key);
    __s64 n = ctx->ax;
    if (n <= 0)
        return 0;
    __u64 conn_key = conn_key_of(tgid, call.fd);
    struct conn_state *conn = conns.lookup(&conn_key);
    if (!conn) {
        count(COUNTER_TLS_UNBOUND);
        return 0;
    }
    go_tls_own(conn);
    struct io_args io = {.buf = call.buf, .kind = IO_FLAT, .dir = call.dir, .nr = -1};
    on_data(conn, &io, n, pid_tgid, bpf_ktime_get_ns());
    return 0;
}

/* ================================================================ 4. entry points */

/* ---------------------------------------------------------------- process lifecycle */

int on_task_newtask(struct task_newtask_ctx *args) { return task_newtask(args); }
int on_sched_process_exec(struct sched_process_exec_ctx *args) { return process_exec(args); }
int on_sched_process_exit(void *args) { return process_exit(); }

/* ---------------------------------------------------------------- socket tracepoints */

#ifdef SOCK_TRACEPOINTS
int sk_io(struct sock_length_ctx *ctx) { return sock_data(ctx); } /* send_length, recv_length */
int sk_state(struct inet_sock_state_ctx *ctx) { return sock_state(ctx); }
#endif

/* ---------------------------------------------------------------- tracepoint entry points */

#define SYS_ENTER(name) int tp_enter_##name(struct sys_enter_ctx *ctx)
#define SYS_EXIT(name) int tp_exit_##name(struct sys_exit_ctx *ctx)

SYS_ENTER(read) { return io_enter(ctx->nr, ctx->args[0], (void *)ctx->args[1], 0, IO_FLAT, DIR_INGRESS); }
SYS_ENTER(recvfrom) { return io_enter(ctx->nr, ctx->args[0], (void *)ctx->args[1], 0, IO_FLAT, DIR_INGRESS); }
SYS_ENTER(readv) { return io_enter(ctx->nr, ctx->args[0], (void *)ctx->args[1], ctx->args[2], IO_IOVEC, DIR_INGRESS); }
SYS_ENTER(recvmsg) { return io_enter(ctx->nr, ctx->args[0], (void *)ctx->args[1], 0, IO_MSG, DIR_INGRESS); }
SYS_ENTER(write) { return io_enter(ctx->nr, ctx->args[0], (void *)ctx->args[1], 0, IO_FLAT, DIR_EGRESS); }
SYS_ENTER(sendto) { return io_enter(ctx->nr, ctx->args[0], (void *)ctx->args[1], 0, IO_FLAT, DIR_EGRESS); }
SYS_ENTER(writev) { return io_enter(ctx->nr, ctx->args[0], (void *)ctx->args[1], ctx->args[2], IO_IOVEC, DIR_EGRESS); }
SYS_ENTER(sendmsg) { return io_enter(ctx->nr, ctx->args[0], (void *)ctx->args[1], 0, IO_MSG, DIR_EGRESS); }
SYS_ENTER(sendfile64) { return io_enter(ctx->nr, ctx->args[0], NULL, 0, IO_SIZE_ONLY, DIR_EGRESS); }
#ifdef IO_ARGS_AT_EXIT
SYS_EXIT(io) { return io_exit_from_registers(ctx->nr, ctx->ret, NULL); }
#else
SYS_EXIT(io) { return io_exit(ctx->nr, ctx->ret); }
#endif

SYS_ENTER(socket) { return socket_enter(ctx->args[1]); }
SYS_EXIT(socket) { return socket_exit(ctx->ret); }
SYS_ENTER(bind) { return bind_enter(ctx->args[0], (void *)ctx->args[1]); }
SYS_ENTER(connect) { return connect_enter(ctx->args[0], (void *)ctx->args[1]); }
SYS_EXIT(connect) { return connect_exit(ctx->ret); }
SYS_ENTER(accept) { return accept_enter(ctx->nr, ctx->args[0], (void *)ctx->args[1]); }
SYS_EXIT(accept) { return accept_exit(ctx->nr, ctx->ret); }
SYS_ENTER(close) { return close_enter(ctx->args[0], 0); }
SYS_ENTER(getppid) { return flush_trigger(); }
/* The same trigger with no system call hooked for it, where the kernel runs a program on
 * request (BPF_PROG_TEST_RUN of a raw-tracepoint program, Linux 5.10 and later): the agent
 * runs it in its own thread, so the check of its pid holds as with getppid(). */
int run_flush(void *ctx) { return flush_trigger(); }
SYS_ENTER(mmap) { return mmap_enter(ctx->args[2], ctx->args[4]); }

/* ---------------------------------------------------------------- kprobe entry points
 * bcc's syscall__ prefix unwraps the syscall wrapper's pt_regs into these arguments. */

int syscall__read(struct pt_regs *ctx, int fd, void *buf) { return io_enter(-1, fd, buf, 0, IO_FLAT, DIR_INGRESS); }
int syscall__recvfrom(struct pt_regs *ctx, int fd, void *buf) { return io_enter(-1, fd, buf, 0, IO_FLAT, DIR_INGRESS); }
int syscall__readv(struct pt_regs *ctx, int fd, void *iov, __u64 n) { return io_enter(-1, fd, iov, n, IO_IOVEC, DIR_INGRESS); }
int syscall__recvmsg(struct pt_regs *ctx, int fd, void *msg) { return io_enter(-1, fd, msg, 0, IO_MSG, DIR_INGRESS); }
int syscall__write(struct pt_regs *ctx, int fd, void *buf) { return io_enter(-1, fd, buf, 0, IO_FLAT, DIR_EGRESS); }
int syscall__sendto(struct pt_regs *ctx, int fd, void *buf) { return io_enter(-1, fd, buf, 0, IO_FLAT, DIR_EGRESS); }
int syscall__writev(struct pt_regs *ctx, int fd, void *iov, __u64 n) { return io_enter(-1, fd, iov, n, IO_IOVEC, DIR_EGRESS); }
int syscall__sendmsg(struct pt_regs *ctx, int fd, void *msg) { return io_enter(-1, fd, msg, 0, IO_MSG, DIR_EGRESS); }
int syscall__sendfile64(struct pt_regs *ctx, int out_fd) { return io_enter(-1, out_fd, NULL, 0, IO_SIZE_ONLY, DIR_EGRESS); }
int kret_io(struct pt_regs *ctx) {
    /* -1: no syscall number here. Hidden from the compiler, which otherwise specialises the
     * code into a shape whose states exceed the verifier's budget (the tracepoint twin,
     * given a run-time number, verifies) */
    __s32 nr = -1;
    asm volatile("" : "+r"(nr));
    return io_exit(nr, PT_REGS_RC(ctx));
}

int syscall__socket(struct pt_regs *ctx, int family, int type) { return socket_enter(type); }
int kret_socket(struct pt_regs *ctx) { return socket_exit(PT_REGS_RC(ctx)); }
int syscall__bind(struct pt_regs *ctx, int fd, void *addr) { return bind_enter(fd, addr); }
int syscall__connect(struct pt_regs *ctx, int fd, void *addr) { return connect_enter(fd, addr); }
int kret_connect(struct pt_regs *ctx) { return connect_exit(PT_REGS_RC(ctx)); }
int syscall__accept(struct pt_regs *ctx, int fd, void *addr) { return accept_enter(-1, fd, addr); }
int kret_accept(struct pt_regs *ctx) { return accept_exit(-1, PT_REGS_RC(ctx)); }
int syscall__close(struct pt_regs *ctx, int fd) { return close_enter(fd, 0); }
int syscall__getppid(struct pt_regs *ctx) { return flush_trigger(); }
int syscall__mmap(struct pt_regs *ctx, void *addr, __u64 len, __u64 prot) {
    /* a BPF function takes five arguments at most: the fifth syscall argument (fd) is read
     * from the user registers the syscall wrapper was given (uapi struct pt_regs) */
    struct pt_regs *user_regs = (struct pt_regs *)PT_REGS_PARM1(ctx);
    __s64 fd = -1;
    bpf_probe_read_kernel(&fd, sizeof(fd), &user_regs->r8);
    return mmap_enter(prot, fd);
}

/* ---------------------------------------------------------------- TLS library uprobes */

/* OpenSSL, BoringSSL: int SSL_read(SSL *, void *, int), int SSL_read_ex(SSL *, void *,
 * size_t, size_t *); the write functions mirror them. */
int uprobe_ssl_read(struct pt_regs *ctx) {
    return tls_enter(PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx), NULL, DIR_INGRESS, 1, 0);
}

int uprobe_ssl_write(struct pt_regs *ctx) {
    return tls_enter(PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx), NULL, DIR_EGRESS, 1,
                     (__u32)PT_REGS_PARM3(ctx));
}

int uprobe_ssl_read_ex(struct pt_regs *ctx) {
    return tls_enter(PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx), (void *)PT_REGS_PARM4(ctx),
                     DIR_INGRESS, 1, 0);
}

int uprobe_ssl_write_ex(struct pt_regs *ctx) {
    return tls_enter(PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx), (void *)PT_REGS_PARM4(ctx),
                     DIR_EGRESS, 1, PT_REGS_PARM3(ctx));
}

/* GnuTLS: ssize_t gnutls_record_recv(gnutls_session_t, void *, size_t); send mirrors it. */
int uprobe_gnutls_recv(struct pt_regs *ctx) {
    return tls_enter(PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx), NULL, DIR_INGRESS, 0, 0);
}

int uprobe_gnutls_send(struct pt_regs *ctx) {
    return tls_enter(PT_REGS_PARM1(ctx), (void *)PT_REGS_PARM2(ctx), NULL, DIR_EGRESS, 0,
                     PT_REGS_PARM3(ctx));
}

int uretprobe_tls(struct pt_regs *ctx) { return tls_exit(PT_REGS_RC(ctx)); }

/* Go crypto/tls: (*Conn).Read and Write, and a uprobe on each of their RET instructions */
int uprobe_go_tls_read(struct pt_regs *ctx) { return go_tls_enter(ctx, DIR_INGRESS); }
int uprobe_go_tls_write(struct pt_regs *ctx) { return go_tls_enter(ctx, DIR_EGRESS); }

int uprobe_go_tls_return(struct pt_regs *ctx) { return go_tls_return(ctx); }

/* ---------------------------------------------------------------- the dynamic loader */

/* glibc's and musl's _dl_debug_state(), called for debuggers whenever the loader has changed
 * what is mapped (dlopen): hooked where no mmap() is (socket tracepoints). */
int uprobe_dl_debug_state(struct pt_regs *ctx) { return code_mapped(); }
