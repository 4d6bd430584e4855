/* The syscall-tax scenario's workload: one process plays client and server of an HTTP/1.1
 * keep-alive connection over TCP loopback, making for every request the system calls nginx
 * makes for a static file (recvfrom, openat, newfstatat, writev, sendfile, close) and a
 * client's (sendto, read). A closed loop with no other process in it, so the CPU time it
 * spends per request moves with what the kernel adds to its system calls and little else.
 *
 * usage: request_loop REQUESTS FILE
 * It connects only after a line arrives on stdin (so an agent can begin tracing first), runs
 * 1000 unmeasured requests, then REQUESTS measured ones, and prints one line:
 *   requests=N syscalls=S cpu_ns=C wall_ns=W
 * (S: system calls in the measured requests; C and W: per request). Exits non-zero with a
 * message on stderr if any call fails. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 1000

static void fail(const char *what) {
    perror(what);
    exit(2);
}

static double wall_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static double cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s REQUESTS FILE\n", argv[0]);
        return 2;
    }
    long requests = atol(argv[1]);
    const char *path = argv[2];
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        fail("stdin");

    int one = 1;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t addr_len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 8) ||
        getsockname(listener, (struct sockaddr *)&addr, &addr_len))
        fail("listen");
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(client, (struct sockaddr *)&addr, sizeof addr))
        fail("connect");
    struct sockaddr_in peer;
    socklen_t peer_len = sizeof peer;
    int server = accept4(listener, (struct sockaddr *)&peer, &peer_len, 0);
    if (server < 0)
        fail("accept4");
    /* without it the response's second segment waits for the delayed ACK of the first */
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    static const char request[] = "GET /index.html HTTP/1.1\r\nHost: localhost\r\n"
                                  "User-Agent: request_loop\r\nAccept: */*\r\n\r\n";
    char buf[8192], head[256];
    long syscalls = 0;
    double cpu0 = 0, wall0 = 0;
    for (long i = -WARMUP; i < requests; i++) {
        if (i == 0) {
            syscalls = 0;
            cpu0 = cpu_ns();
            wall0 = wall_ns();
        }
        if (send(client, request, sizeof request - 1, 0) != sizeof request - 1)
            fail("send");
        if (recvfrom(server, buf, sizeof buf, 0, NULL, NULL) <= 0)
            fail("recvfrom");
        int file = openat(AT_FDCWD, path, O_RDONLY | O_NONBLOCK);
        if (file < 0)
            fail("openat");
        struct stat st;
        if (fstatat(file, "", &st, AT_EMPTY_PATH))
            fail("fstatat");
        int head_len = snprintf(head, sizeof head,
                                "HTTP/1.1 200 OK\r\nServer: request_loop\r\n"
                                "Content-Type: text/html\r\nContent-Length: %ld\r\n"
                                "Connection: keep-alive\r\n",
                                (long)st.st_size);
        struct iovec iov[2] = {{head, head_len}, {"\r\n", 2}};
        if (writev(server, iov, 2) != head_len + 2)
            fail("writev");
        off_t offset = 0;
        if (sendfile(server, file, &offset, st.st_size) != st.st_size)
            fail("sendfile");
        close(file);
        syscalls += 7;
        long want = head_len + 2 + st.st_size;
        for (long got = 0; got < want; syscalls++) {
            long n = read(client, buf, sizeof buf);
            if (n <= 0)
                fail("read");
            got += n;
        }
    }
    double cpu = cpu_ns() - cpu0, wall = wall_ns() - wall0;
    printf("requests=%ld syscalls=%ld cpu_ns=%.1f wall_ns=%.1f\n", requests, syscalls,
           cpu / requests, wall / requests);
    return 0;
}
