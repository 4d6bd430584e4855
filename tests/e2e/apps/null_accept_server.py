"""An HTTP/1.1 server that accepts as libuv (Node.js) does: accept4(fd, NULL, NULL, 0).

The system call then tells no one the client's address. Each connection gets one request and
one "hello" answer, then is closed. Prints "ready" when listening.
Usage: null_accept_server.py HOST PORT (HOST may be an IPv6 address such as ::1).
"""

import ctypes
import socket
import sys

from request_head import read_head

libc = ctypes.CDLL(None, use_errno=True)
libc.accept4.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]

host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
listener = socket.socket(family, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((host, port))
listener.listen(16)
print("ready", flush=True)

while True:
    fd = libc.accept4(listener.fileno(), None, None, 0)
    if fd < 0:
        continue
    with socket.socket(fileno=fd) as conn:
        if read_head(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
