"""An HTTPS client through tlslite-ng (TLS written in pure Python), for the end-to-end tests.

HOST PORT PATH N: prints "waiting", blocks on a stdin line, then connects, handshakes with
tlslite and makes N HTTP/1.1 requests on that one connection; prints "done STATUS...". No
TLS library function runs: the agent's uprobes cannot see this plaintext.
"""

import socket
import sys

from tlslite import HandshakeSettings, TLSConnection


def read_response(conn: TLSConnection, buffered: bytes) -> tuple[int, bytes]:
    while b"\r\n\r\n" not in buffered:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buffered += chunk
    head, _, rest = buffered.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response body")
        rest += chunk
    return status, rest[length:]


def main() -> None:
    host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    print("waiting", flush=True)
    sys.stdin.readline()
    conn = TLSConnection(socket.create_connection((host, port)))
    conn.handshakeClientCert(settings=HandshakeSettings())
    statuses = []
    buffered = b""
    for _ in range(n):
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        status, buffered = read_response(conn, buffered)
        statuses.append(str(status))
    conn.close()
    print("done " + " ".join(statuses), flush=True)


main()
