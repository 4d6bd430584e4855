"""A grpcio server without generated code, for the end-to-end tests.

Service helloworld.Greeter on raw bytes (no serializers):
  SayHello        unary: sleeps 20 ms, answers b"hello " + request; a request of b"missing"
                  aborts with NOT_FOUND, b"crash" with INTERNAL (trailers-only responses)
  SayHelloStream  server streaming: three messages b"hello 0", b"hello 1", b"hello 2"

Usage: grpc_server.py PORT. Plaintext HTTP/2 (h2c) on 127.0.0.1:PORT; prints "ready PORT"
once listening, and serves until terminated.
"""

import signal
import sys
import time
from collections.abc import Iterator
from concurrent import futures

import grpc


def say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such greeting")
    if request == b"crash":
        context.abort(grpc.StatusCode.INTERNAL, "the greeter broke")
    time.sleep(0.02)
    return b"hello " + request


def say_hello_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for i in range(3):
        yield b"hello %d" % i


def main() -> None:
    port = int(sys.argv[1])
    handler = grpc.method_handlers_generic_handler(
        "helloworld.Greeter",
        {
            "SayHello": grpc.unary_unary_rpc_method_handler(say_hello),
            "SayHelloStream": grpc.unary_stream_rpc_method_handler(say_hello_stream),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound != port:
        raise SystemExit(f"could not bind 127.0.0.1:{port}")
    server.start()
    print(f"ready {port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


main()
