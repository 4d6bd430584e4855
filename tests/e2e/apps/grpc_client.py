"""A grpcio client without generated code, for the end-to-end tests.

Usage: grpc_client.py PORT. Opens ONE insecure channel to 127.0.0.1:PORT (plaintext HTTP/2,
prior knowledge), prints "ready", then runs one command per stdin line, all on that channel:
  unary REQ     /helloworld.Greeter/SayHello with the bytes REQ; prints "ok REPLY" or
                "status CODE_NAME" (e.g. "status NOT_FOUND")
  stream REQ    /helloworld.Greeter/SayHelloStream; prints "stream N" (N messages received)
An empty line or end of input closes the channel and exits.
"""

import sys

import grpc


def main() -> None:
    port = int(sys.argv[1])
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    unary = channel.unary_unary("/helloworld.Greeter/SayHello")
    stream = channel.unary_stream("/helloworld.Greeter/SayHelloStream")
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if not command:
            break
        try:
            if command == "unary":
                reply = unary(argument.encode(), timeout=10)
                print(f"ok {reply.decode()}", flush=True)
            elif command == "stream":
                replies = list(stream(argument.encode(), timeout=10))
                print(f"stream {len(replies)}", flush=True)
            else:
                print(f"unknown command {command}", flush=True)
        except grpc.RpcError as error:
            print(f"status {error.code().name}", flush=True)
    channel.close()


main()
