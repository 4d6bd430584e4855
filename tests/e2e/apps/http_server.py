"""A threaded HTTP/1.1 server for the end-to-end tests (stdlib only).

Routes: /users/<id> 200, /slow (sleeps 20 ms), /status/<code>, /chunked (chunked response),
/big (1 MiB, through a small send buffer), POST /echo (reads the body, answers its size).
Prints "ready PORT" when listening. Usage: http_server.py PORT [--tls CERT KEY]; with --tls the
listening socket is wrapped with the ssl module (HTTPS, same routes).
"""

import http.server
import socket
import sys
import time

BIG = b"x" * (1 << 20)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/slow":
            time.sleep(0.02)
            self._send(200, b"slow")
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"status")
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"first", b"second", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/big":
            # a small send buffer: the write returns only as fast as the client reads
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            self._send(200, BIG)
        else:
            self._send(200, b"hello")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self._send(201, str(len(body)).encode())

    def log_message(self, *args: object) -> None:
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
if sys.argv[2:3] == ["--tls"]:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[3], sys.argv[4])
    # the handshake happens in the handler's thread, on its first read: a slow client cannot
    # hold up the accept loop
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
print(f"ready {server.server_address[1]}", flush=True)
server.serve_forever()
