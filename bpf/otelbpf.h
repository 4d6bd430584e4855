/* otelbpf kernel <-> user ABI.
 *
 * The one header both sides agree on: otelbpf/abi.py mirrors every struct here with ctypes,
 * and tests/unit/test_abi.py compiles this header with bcc and checks sizes and offsets match.
 * Every event starts with its u32 type; every struct has explicit padding.
 */
#ifndef OTELBPF_H
#define OTELBPF_H

/* Sizes of the captured heads. Powers of two: the capture code masks offsets with SIZE-1,
 * which is how the verifier learns that a copy stays inside the buffer. */
#ifndef REQUEST_HEAD_SIZE
#define REQUEST_HEAD_SIZE 1024
#endif
#ifndef RESPONSE_HEAD_SIZE
#define RESPONSE_HEAD_SIZE 512
#endif
#define HEAD_SLACK (REQUEST_HEAD_SIZE > RESPONSE_HEAD_SIZE ? REQUEST_HEAD_SIZE : RESPONSE_HEAD_SIZE)
/* Bytes of one syscall's data copied for an HTTP/2 connection (frames beyond it are counted
 * by length only: the user-space frame parser skips DATA payloads it was not given). */
#ifndef H2_CHUNK_SIZE
#define H2_CHUNK_SIZE 8192
#endif

#define TASK_COMM_LEN 16
#define EXEC_FILENAME_SIZE 256
#define FLUSH_QUEUE_SIZE 64
/* Every pid a 64-bit kernel can give (its PID_MAX_LIMIT): the traced_pids array has a byte
 * for each. */
#define PID_LIMIT (1 << 22)

enum event_type {
    EVENT_EXCHANGE = 1, /* struct exchange_event: one request/response exchange */
    EVENT_EXEC = 2,     /* struct process_event: a process called exec */
    EVENT_FORK = 3,     /* struct process_event: a traced process forked a child */
    EVENT_EXIT = 4,     /* struct process_event: a traced process's main thread exited */
    EVENT_MMAP_EXEC = 5, /* struct process_event: a traced process mapped a file executable */
    EVENT_H2_CHUNK = 6,  /* struct h2_chunk_event: bytes of an HTTP/2 connection, in order */
    EVENT_ADDRESS_REQUEST = 7, /* struct address_request: a connection's addresses are unknown */
    EVENT_AGENT_CONNECT = 8,   /* struct address_request: the agent itself is connecting */
};

enum conn_role {
    ROLE_UNKNOWN = 0,
    ROLE_CLIENT = 1,
    ROLE_SERVER = 2,
};

enum exchange_phase {
    PHASE_IDLE = 0,     /* no exchange in progress */
    PHASE_REQUEST = 1,  /* request bytes seen, no response yet */
    PHASE_RESPONSE = 2, /* response bytes seen; ends at the next request or close or idle */
};

/* exchange_event.flags */
#define EXCHANGE_F_ROLE_INFERRED 0x1 /* role guessed from the first data direction */
#define EXCHANGE_F_NO_RESPONSE 0x2   /* connection closed with the request unanswered */
#define EXCHANGE_F_CLOSED 0x4        /* flushed by close() */
#define EXCHANGE_F_IDLE 0x8          /* flushed by the idle sweep */
#define EXCHANGE_F_SEEDED 0x10       /* connection was opened before tracing began */
#define EXCHANGE_F_TLS 0x20          /* plaintext from a TLS library hook, not the socket */
#define CHUNK_F_CLOSED 0x40          /* h2_chunk_event: the connection closed (no data) */
#define CHUNK_F_ELIDED 0x80          /* h2_chunk_event: frames walked, DATA payloads left out */
#define CHUNK_F_WALK_LOST 0x100      /* h2_chunk_event: the walk lost its place mid-syscall */

enum h2_mode {
    H2_OFF = 0,
    H2_WALK = 1, /* frames walked in the kernel: headers and non-DATA frames copied */
    H2_RAW = 2,  /* bytes copied as they come (joined mid-connection, or the walk got lost) */
};

/* Kernel-side counters: a per-CPU array indexed by these, summed in user space. */
enum counter_index {
    COUNTER_EVENTS = 0,       /* events written to the ring buffer */
    COUNTER_DROPS = 1,        /* events lost because the ring buffer was full */
    COUNTER_CONN_FULL = 2,    /* connections not tracked because the conns map was full */
    COUNTER_ORPHAN_BYTES = 3, /* response-direction data seen with no request before it */
    COUNTER_TLS_UNBOUND = 4,  /* TLS library calls whose socket could not be found */
    COUNTER_MAX = 5,
};

/* An IPv4 address sits in the first four bytes of addr; port is in host byte order. */
struct endpoint {
    __u8 addr[16];
    __u16 port;
    __u16 family; /* AF_INET, AF_INET6, or 0 when unknown */
    __u32 _pad;
};

/* An exchange as the conns map holds it. The ring-buffer record is this struct cut after
 * response_len, followed by request_len request bytes, then response_len response bytes. */
struct exchange_event {
    __u32 type;
    __u32 flags;
    __u32 pid;
    __u32 tid; /* thread that began the exchange */
    __u32 fd;
    __u8 role;
    __u8 _pad0[3];
    __u64 conn_id; /* unique per connection for the agent's lifetime */
    __u64 start_ns; /* first request byte, CLOCK_MONOTONIC */
    __u64 end_ns;   /* last response byte, CLOCK_MONOTONIC */
    __u64 request_bytes;
    __u64 response_bytes;
    struct endpoint local;
    struct endpoint peer;
    char comm[TASK_COMM_LEN];
    __u32 request_len;  /* bytes of the request's head captured, from request[0] */
    __u32 response_len; /* bytes of the response's head captured, right after the request's
                         * (from request[request_len]: an emitted event is one run) */
    __u8 request[REQUEST_HEAD_SIZE];
    __u8 response[RESPONSE_HEAD_SIZE]; /* room: the response's bytes start in request[] */
};

/* The value of the conns map: the exchange in progress, laid out exactly as it is emitted,
 * then the pairing phase, then slack that lets a variable-offset copy be proven in bounds. */
struct conn_state {
    struct exchange_event ev;
    __u8 phase;
    __u8 tls; /* 1: a TLS library hook owns this connection's data; the socket sees ciphertext */
    __u8 h2;  /* enum h2_mode: HTTP/2 chunks go to user space in order, no pairing here */
    __u8 _pad[5];
    __u64 sk; /* the kernel's struct sock, where the probe sees it (socket tracepoints): a
               * descriptor reused by another connection is told from this one by it */
    __u32 h2_skip[2]; /* per direction (io dir): DATA payload bytes still to pass over */
    __u32 h2_keep[2]; /* per direction: bytes of a non-DATA frame still to copy */
    __u8 h2_header[48]; /* per direction, 24 bytes each: a frame header split between writes
                         * (9 used; a flat array: bcc mistypes two-dimensional ones) */
    __u8 h2_header_have[2];
    __u8 _pad2[6];
    __u8 _slack[HEAD_SLACK];
};

/* HTTP/2 is multiplexed: pairing by change of direction does not fit it, so its bytes go to
 * user space in order, one event per syscall, with only the copied bytes sent. */
struct h2_chunk_event {
    __u32 type;
    __u32 flags; /* EXCHANGE_F_TLS, CHUNK_F_CLOSED */
    __u32 pid;
    __u32 tid;
    __u32 fd;
    __u8 role;
    __u8 dir; /* 0: the process wrote these bytes, 1: it read them */
    __u8 _pad0[2];
    __u64 conn_id;
    __u64 ts_ns; /* CLOCK_MONOTONIC at the syscall's exit */
    __u32 total_len;  /* bytes the syscall moved */
    __u32 copied_len; /* bytes in data[] (the record ends there) */
    struct endpoint local;
    struct endpoint peer;
    char comm[TASK_COMM_LEN];
    __u8 data[H2_CHUNK_SIZE];
};

struct process_event {
    __u32 type;
    __u32 pid;
    __u32 ppid;
    __u32 _pad;
    char comm[TASK_COMM_LEN];
    char filename[EXEC_FILENAME_SIZE];
};

struct address_request {
    __u32 type;
    __u32 pid;
    __u32 fd;
    __u32 _pad;
    __u64 conn_id;
};

/* An entry user space puts in the flush queue before it pulls the flush trigger. */
struct flush_request {
    __u64 conn_key; /* (pid << 32) | fd */
    __u32 force;    /* 1: flush whatever is pending (process gone, shutdown); 0: only if idle */
    __u32 slot;     /* the answered slot that named it, or FLUSH_NO_SLOT */
};
#define FLUSH_NO_SLOT 0xffffffff

/* Key of selector_comms: an --exe name the kernel matches at exec (user space fills it). */
struct comm_key {
    char comm[TASK_COMM_LEN];
};

/* A read or write between its entry and its exit, keyed by thread. User space seeds one for
 * a thread already blocked in a read when the probes attach. The entry outlives the call
 * (until the thread exits): conn_key 0 marks it idle. */
struct io_args {
    __u64 conn_key; /* 0: no call in flight */
    const void *buf; /* flat buffer, iovec array or msghdr, per kind */
    __u64 iovcnt;
    __u8 kind;
    __u8 dir;
    __u8 _pad[2];
    __s32 nr; /* syscall number the entry saw; -1 when unknown (kprobes) */
};

/* What the agent keeps per thread that does I/O on a tracked connection (the threads map),
 * one entry so that a system call finds all of it in one lookup. */
struct thread_state {
    struct io_args io;  /* the read or write in flight */
    __u64 tls_session;  /* the TLS library call the thread is in (SSL*...), if THREAD_IN_TLS */
    __u32 last_read_fd; /* the socket it read last, if THREAD_READ_ONE */
    __u32 flags;        /* THREAD_* */
};
#define THREAD_IN_TLS 0x1   /* inside a TLS library call: its socket calls move ciphertext */
#define THREAD_READ_ONE 0x2 /* last_read_fd is set */

/* A socket of a traced process, keyed by (pid, fd): what socket() and bind() said. */
struct socket_facts {
    struct endpoint bound; /* the address given to bind(); family 0 when none */
    __u32 type;            /* SOCK_STREAM, SOCK_DGRAM... from socket(); 0 when unknown */
    __u32 _pad;
};

/* An accept between its entry and its exit, keyed by thread (seeded like io_args). */
struct accept_args {
    __u64 listen_fd;
    const void *peer_addr;
    __s64 nr;
};

/* Index of the settings array. */
enum setting_index {
    SETTING_TRACE_ALL = 0,   /* 1: trace every process but the agent */
    SETTING_IDLE_NS = 1,     /* an exchange idle this long is flushed by the sweep */
    SETTING_FLUSH_COUNT = 2, /* entries in the flush queue for the next trigger */
    SETTING_PORT_FILTER = 3, /* 1: the ports map selects processes by TCP port */
    SETTING_AGENT_TGID = 4,  /* the agent's own pid: never traced, the only flush trigger */
    SETTING_SEEDED_CALLS = 5, /* 1: user space seeded calls blocked at start (see io_enter) */
    SETTING_MAX = 6,
};

#endif
