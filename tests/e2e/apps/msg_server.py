"""A keep-alive HTTP/1.1 server that reads with recvmsg() and answers with sendmsg() in three
slices (status line, headers, body): the message-header I/O path of the kernel side.

Prints "ready PORT" when listening. Usage: msg_server.py PORT. One connection at a time.
"""

import socket
import sys

BODY = b"hello"


def serve(conn: socket.socket) -> None:
    pending = b""
    while True:
        while b"\r\n\r\n" not in pending:
            data, _, _, _ = conn.recvmsg(65536)
            if not data:
                return
            pending += data
        head, _, pending = pending.partition(b"\r\n\r\n")
        path = head.split(b" ")[1]
        status = b"404 Not Found" if path.startswith(b"/missing") else b"200 OK"
        conn.sendmsg(
            [
                b"HTTP/1.1 " + status + b"\r\n",
                b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(BODY),
                BODY,
            ]
        )


def main() -> None:
    port = int(sys.argv[1])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    print(f"ready {port}", flush=True)
    while True:
        conn, _ = listener.accept()
        with conn:
            serve(conn)


if __name__ == "__main__":
    main()
