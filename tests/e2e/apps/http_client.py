"""HTTP/1.1 clients for the end-to-end tests (stdlib http.client), one mode per argv[1].

keepalive HOST PORT PATH N      N requests on one connection
concurrent HOST PORT T N        T threads, each N requests on its own connection
interactive HOST PORT           one connection; a path per stdin line; prints "done STATUS"
slowread HOST PORT PATH DELAY   small receive buffer; waits DELAY s after the head, then reads

With --tls (anywhere after the mode), keepalive, concurrent and interactive speak HTTPS
(http.client.HTTPSConnection, certificate not verified).
"""

import http.client
import socket
import sys
import threading
import time


def connection(host: str, port: int) -> http.client.HTTPConnection:
    if not TLS:
        return http.client.HTTPConnection(host, port)
    import ssl

    return http.client.HTTPSConnection(host, port, context=ssl._create_unverified_context())


def keepalive(host: str, port: int, path: str, n: int) -> None:
    conn = connection(host, port)
    for _ in range(n):
        conn.request("GET", path)
        conn.getresponse().read()
    conn.close()


def concurrent(host: str, port: int, threads: int, n: int) -> None:
    barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        conn = connection(host, port)
        conn.connect()
        barrier.wait()
        for i in range(n):
            conn.request("GET", f"/users/{index * 100 + i}")
            conn.getresponse().read()
        conn.close()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


def interactive(host: str, port: int) -> None:
    conn = connection(host, port)
    conn.connect()
    print("connected", flush=True)
    for line in sys.stdin:
        path = line.strip()
        if not path:
            break
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        print(f"done {response.status}", flush=True)
    conn.close()


def slowread(host: str, port: int, path: str, delay: float) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect((host, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(1024)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    time.sleep(delay)
    total = len(body)
    while total < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        total += len(chunk)
    print(f"read {total}", flush=True)
    sock.close()


TLS = "--tls" in sys.argv
if TLS:
    sys.argv.remove("--tls")
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "keepalive":
    keepalive(host, port, sys.argv[4], int(sys.argv[5]))
elif mode == "concurrent":
    concurrent(host, port, int(sys.argv[4]), int(sys.argv[5]))
elif mode == "interactive":
    interactive(host, port)
elif mode == "slowread":
    slowread(host, port, sys.argv[4], float(sys.argv[5]))
