"""An HTTP/1.1 server that never calls close() on a connection: it ends each one with
close_range(2) (os.closerange), so a probe that waits for close() never sees it end. The
next connection it accepts gets the same descriptor number.

Each connection gets one request and a keep-alive "hello" answer. Prints "ready" when
listening. Usage: close_range_server.py PORT
"""

import os
import socket
import sys

from request_head import read_head

port = int(sys.argv[1])
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(16)
print("ready", flush=True)

while True:
    conn, _ = listener.accept()
    if read_head(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    fd = conn.detach()  # the socket object forgets it: no close() from its finaliser
    os.closerange(fd, fd + 1)  # close_range(2)
    print(f"closed {fd}", flush=True)
