/* otelbpf socket probes: pair each connection's request and response in the kernel.
 *
 * Hooks the socket system calls (through syscall tracepoints, or kprobes where the kernel has
 * them) and keeps per-connection state in the conns map, keyed by (pid, fd). A change of
 * direction on a connection closes an exchange; one ring-buffer event carries the whole
 * exchange: timings, byte counts, addresses and the first bytes of each direction.
 *
 * Reads only stable interfaces: syscall arguments, tracepoint fields and user memory. No kernel
 * struct layout is read, so headers of another kernel version compile it safely.
 *
 * Defines set by the loader: AGENT_TGID, MAX_CONNS, RINGBUF_PAGES, WAKEUP_BATCH,
 * REQUEST_HEAD_SIZE, RESPONSE_HEAD_SIZE.
 */
#include <uapi/linux/ptrace.h>
#include <linux/socket.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/uio.h>
#include <linux/sched.h>

#include "otelbpf.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#define SOCK_TYPE_MASK 0xf
#define SOCK_STREAM_TYPE 1
#define EINPROGRESS_ERR 115
#define MAX_IOVECS 4

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

BPF_HASH(allowed_pids, __u32, __u8, 65536);       /* tgid -> 1: processes being traced */
BPF_HASH(selector_ports, __u16, __u8, 256);       /* TCP port -> 1: --port selectors */
BPF_ARRAY(settings, __u64, SETTING_MAX);
BPF_PERCPU_ARRAY(counters, __u64, COUNTER_MAX);
BPF_ARRAY(conn_ids, __u64, 1);                    /* next connection id */
BPF_ARRAY(wakeup_clock, __u64, 1);                /* events since the last forced wake-up */
BPF_ARRAY(zero_conn, struct conn_state, 1);       /* all zeroes: template for new entries */
BPF_ARRAY(flush_queue, struct flush_request, FLUSH_QUEUE_SIZE);
BPF_PERCPU_ARRAY(process_scratch, struct process_event, 1);

/* Connections in flight, allocated on use: a host with few connections pays for few. */
BPF_F_TABLE("hash", __u64, struct conn_state, conns, MAX_CONNS, BPF_F_NO_PREALLOC);
BPF_HASH(bound, __u64, struct endpoint, 16384);   /* (pid, fd) -> address given to bind() */
BPF_HASH(socket_types, __u64, __u32, 65536);      /* (pid, fd) -> socket type from socket() */

/* What an in-flight syscall needs at its exit, keyed by thread. */
enum io_kind { IO_FLAT = 0, IO_IOVEC = 1, IO_MSG = 2, IO_SIZE_ONLY = 3 };
enum io_dir { DIR_EGRESS = 0, DIR_INGRESS = 1 };

struct io_args {
    __u64 conn_key;
    const void *buf; /* flat buffer, iovec array or msghdr, per kind */
    __u64 iovcnt;
    __u8 kind;
    __u8 dir;
    __u8 _pad[2];
    __s32 nr; /* syscall number the entry saw; -1 when unknown (kprobes) */
};
BPF_HASH(pending_io, __u64, struct io_args, 16384);

struct connect_args {
    __u64 fd;
    struct endpoint peer;
};
BPF_HASH(pending_connect, __u64, struct connect_args, 4096);

struct accept_args {
    __u64 listen_fd;
    const void *peer_addr;
    __s64 nr;
};
BPF_HASH(pending_accept, __u64, struct accept_args, 4096);

struct socket_args {
    __u64 type;
};
BPF_HASH(pending_socket, __u64, struct socket_args, 4096);

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

/* The filter every program checks first: untraced processes leave after one lookup. */
static __always_inline int is_traced(__u32 tgid) {
    if (tgid == AGENT_TGID)
        return 0;
    if (allowed_pids.lookup(&tgid))
        return 1;
    return setting(SETTING_TRACE_ALL) != 0;
}

static __always_inline void allow(__u32 tgid) {
    __u8 one = 1;
    if (tgid != AGENT_TGID)
        allowed_pids.update(&tgid, &one);
}

static __always_inline int port_selected(__u16 port) {
    if (!setting(SETTING_PORT_FILTER))
        return 0;
    return selector_ports.lookup(&port) != NULL;
}

/* Wake the reader once per WAKEUP_BATCH events instead of once per event; the reader also
 * polls on a short timeout, so a quiet period still delivers what is pending. */
static __always_inline __u64 wakeup_flag(void) {
    __u32 zero = 0;
    __u64 *clock = wakeup_clock.lookup(&zero);
    if (!clock)
        return 0;
    __u64 n = __sync_fetch_and_add(clock, 1);
    return (n % WAKEUP_BATCH) == (WAKEUP_BATCH - 1) ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
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

/* Start tracking a connection; its fields are filled by the caller. */
static __always_inline struct conn_state *new_conn(__u64 key, __u8 role) {
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
    return conn;
}

/* Emit the exchange held in conn and make room for the next one. */
static __always_inline void finish_exchange(struct conn_state *conn, __u32 flags) {
    if (conn->phase == PHASE_REQUEST)
        flags |= EXCHANGE_F_NO_RESPONSE;
    conn->ev.flags |= flags;
    bpf_get_current_comm(&conn->ev.comm, sizeof(conn->ev.comm));
    emit(&conn->ev, sizeof(conn->ev));
    conn->phase = PHASE_IDLE;
    conn->ev.flags &= (EXCHANGE_F_ROLE_INFERRED | EXCHANGE_F_SEEDED);
    conn->ev.request_bytes = 0;
    conn->ev.response_bytes = 0;
    conn->ev.request_len = 0;
    conn->ev.response_len = 0;
    conn->ev.start_ns = 0;
    conn->ev.end_ns = 0;
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

static __always_inline void append_flat(struct conn_state *conn, int to_request,
                                        const void *src, __u64 n) {
    if (to_request)
        APPEND_HEAD(conn->ev.request, conn->ev.request_len, REQUEST_HEAD_SIZE, src, n);
    else
        APPEND_HEAD(conn->ev.response, conn->ev.response_len, RESPONSE_HEAD_SIZE, src, n);
}

static __always_inline void append_iovec(struct conn_state *conn, int to_request,
                                         const struct iovec *iov, __u64 iovcnt, __u64 n) {
    __u64 left = n;
#pragma unroll
    for (int i = 0; i < MAX_IOVECS; i++) {
        if (i >= iovcnt || left == 0)
            break;
        struct iovec vec = {};
        if (bpf_probe_read_user(&vec, sizeof(vec), &iov[i]))
            break;
        __u64 chunk = vec.iov_len < left ? vec.iov_len : left;
        append_flat(conn, to_request, vec.iov_base, chunk);
        left -= chunk;
    }
}

/* Data moved on a tracked connection: pair it into the exchange in progress. */
static __always_inline void on_data(struct conn_state *conn, const struct io_args *io,
                                    __u64 bytes, __u64 pid_tgid) {
    if (conn->ev.role == ROLE_UNKNOWN) {
        /* A connection older than the agent, whose role /proc could not tell: servers read
         * the request first, clients write it. */
        conn->ev.role = io->dir == DIR_INGRESS ? ROLE_SERVER : ROLE_CLIENT;
        conn->ev.flags |= EXCHANGE_F_ROLE_INFERRED;
    }
    int is_request = (conn->ev.role == ROLE_SERVER) == (io->dir == DIR_INGRESS);
    __u64 now = bpf_ktime_get_ns();

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
        conn->phase = PHASE_RESPONSE;
        conn->ev.response_bytes += bytes;
        conn->ev.end_ns = now;
    }

    if (io->kind == IO_FLAT)
        append_flat(conn, is_request, io->buf, bytes);
    else if (io->kind == IO_IOVEC)
        append_iovec(conn, is_request, (const struct iovec *)io->buf, io->iovcnt, bytes);
    else if (io->kind == IO_MSG) {
        struct user_msghdr msg = {};
        if (bpf_probe_read_user(&msg, sizeof(msg), io->buf) == 0)
            append_iovec(conn, is_request, msg.msg_iov, msg.msg_iovlen, bytes);
    }
}

/* ---------------------------------------------------------------- syscall handlers */

static __always_inline int io_enter(__s32 nr, __u64 fd, const void *buf, __u64 iovcnt,
                                    __u8 kind, __u8 dir) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (!is_traced(tgid))
        return 0;
    __u64 key = conn_key_of(tgid, fd);
    if (!conns.lookup(&key)) {
        /* The agent may have left an entry for a call it found blocked at start-up (see
         * seed_blocked_calls in otelbpf/connections.py) that ended unseen: never let it
         * stand for this call. */
        pending_io.delete(&pid_tgid);
        return 0;
    }
    struct io_args io = {
        .conn_key = key, .buf = buf, .iovcnt = iovcnt, .kind = kind, .dir = dir, .nr = nr};
    pending_io.update(&pid_tgid, &io);
    return 0;
}

static __always_inline int io_exit(__s32 nr, __s64 ret) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    struct io_args *pending = pending_io.lookup(&pid_tgid);
    if (!pending)
        return 0;
    struct io_args io = *pending;
    pending_io.delete(&pid_tgid);
    if (io.nr >= 0 && nr >= 0 && io.nr != nr)
        return 0; /* left by another call */
    if (ret <= 0)
        return 0;
    struct conn_state *conn = conns.lookup(&io.conn_key);
    if (conn)
        on_data(conn, &io, (__u64)ret, pid_tgid);
    return 0;
}

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
    socket_types.update(&key, &type);
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
    bound.update(&key, &ep);
    return 0;
}

static __always_inline int connect_enter(__u64 fd, const void *uaddr) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (tgid == AGENT_TGID)
        return 0;
    struct connect_args args = {.fd = fd};
    if (read_sockaddr(uaddr, &args.peer))
        return 0;
    if (port_selected(args.peer.port))
        allow(tgid);
    if (!is_traced(tgid))
        return 0;
    __u64 key = conn_key_of(tgid, fd);
    __u32 *type = socket_types.lookup(&key);
    if (type && *type != SOCK_STREAM_TYPE)
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
        struct endpoint *local = bound.lookup(&key);
        if (local)
            conn->ev.local = *local;
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
    struct endpoint *local = bound.lookup(&listen_key);
    if (local)
        conn->ev.local = *local;
    return 0;
}

static __always_inline int close_enter(__u64 fd) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if (!is_traced(tgid))
        return 0;
    __u64 key = conn_key_of(tgid, fd);
    struct conn_state *conn = conns.lookup(&key);
    if (conn) {
        if (conn->phase != PHASE_IDLE)
            finish_exchange(conn, EXCHANGE_F_CLOSED);
        conns.delete(&key);
    }
    bound.delete(&key);
    socket_types.delete(&key);
    return 0;
}

/* The agent pulls this trigger (a getppid() call of its own) after filling the flush queue:
 * exchanges idle past SETTING_IDLE_NS, or forced ones, are emitted here, in the kernel, so
 * the sweep never races with the probes over a connection's state. */
static __always_inline int flush_trigger(void) {
    if ((bpf_get_current_pid_tgid() >> 32) != AGENT_TGID)
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
        struct conn_state *conn = conns.lookup(&key);
        if (!conn || conn->phase == PHASE_IDLE)
            continue;
        if (request->force || (conn->phase == PHASE_RESPONSE && conn->ev.end_ns + idle_ns <= now))
            finish_exchange(conn, EXCHANGE_F_IDLE);
    }
    return 0;
}

/* ---------------------------------------------------------------- process lifecycle */

/* A traced process's children are traced from their first instruction, in the kernel, so
 * nothing they do before user space hears of them is missed. */
int on_task_newtask(struct tracepoint__task__task_newtask *args) {
    if (args->clone_flags & CLONE_THREAD)
        return 0;
    __u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (!allowed_pids.lookup(&parent))
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

int on_sched_process_exec(struct tracepoint__sched__sched_process_exec *args) {
    __u32 zero = 0;
    struct process_event *event = process_scratch.lookup(&zero);
    if (!event)
        return 0;
    event->type = EVENT_EXEC;
    event->pid = bpf_get_current_pid_tgid() >> 32;
    if (event->pid == AGENT_TGID)
        return 0;
    event->ppid = 0;
    bpf_get_current_comm(&event->comm, sizeof(event->comm));
    unsigned short offset = args->data_loc_filename & 0xFFFF;
    bpf_probe_read_kernel_str(event->filename, sizeof(event->filename), (char *)args + offset);
    events.ringbuf_output(event, sizeof(*event), BPF_RB_FORCE_WAKEUP);
    return 0;
}

int on_sched_process_exit(struct tracepoint__sched__sched_process_exit *args) {
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u32 tgid = pid_tgid >> 32;
    if ((__u32)pid_tgid != tgid || !allowed_pids.lookup(&tgid))
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
SYS_EXIT(io) { return io_exit(ctx->nr, ctx->ret); }

SYS_ENTER(socket) { return socket_enter(ctx->args[1]); }
SYS_EXIT(socket) { return socket_exit(ctx->ret); }
SYS_ENTER(bind) { return bind_enter(ctx->args[0], (void *)ctx->args[1]); }
SYS_ENTER(connect) { return connect_enter(ctx->args[0], (void *)ctx->args[1]); }
SYS_EXIT(connect) { return connect_exit(ctx->ret); }
SYS_ENTER(accept) { return accept_enter(ctx->nr, ctx->args[0], (void *)ctx->args[1]); }
SYS_EXIT(accept) { return accept_exit(ctx->nr, ctx->ret); }
SYS_ENTER(close) { return close_enter(ctx->args[0]); }
SYS_ENTER(getppid) { return flush_trigger(); }

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
int kret_io(struct pt_regs *ctx) { return io_exit(-1, PT_REGS_RC(ctx)); }

int syscall__socket(struct pt_regs *ctx, int family, int type) { return socket_enter(type); }
int kret_socket(struct pt_regs *ctx) { return socket_exit(PT_REGS_RC(ctx)); }
int syscall__bind(struct pt_regs *ctx, int fd, void *addr) { return bind_enter(fd, addr); }
int syscall__connect(struct pt_regs *ctx, int fd, void *addr) { return connect_enter(fd, addr); }
int kret_connect(struct pt_regs *ctx) { return connect_exit(PT_REGS_RC(ctx)); }
int syscall__accept(struct pt_regs *ctx, int fd, void *addr) { return accept_enter(-1, fd, addr); }
int kret_accept(struct pt_regs *ctx) { return accept_exit(-1, PT_REGS_RC(ctx)); }
int syscall__close(struct pt_regs *ctx, int fd) { return close_enter(fd); }
int syscall__getppid(struct pt_regs *ctx) { return flush_trigger(); }
