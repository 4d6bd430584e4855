"""The head of one HTTP request read from a socket, for the test servers that read by hand
(imported from their own folder: they run as scripts)."""

import socket


def read_head(conn: socket.socket) -> bytes:
    """Bytes up to and including the blank line after the headers, or what came before EOF."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = conn.recv(4096)
        if not chunk:
            break
        request += chunk
    return request
