"""The project's real OTLP receiver (tests/otlp_receiver.py) in a process of its own.

Run as ``python -m bench.receiver`` from the repository root. It prints
``ready GRPC_PORT HTTP_PORT`` and then answers one line per command on stdin:

- ``count PATH``: spans received whose url.path (or http.target) is PATH;
- ``total``: all spans received;
- ``clear``: forget everything (keeps memory flat across runs);
- ``requests``: export requests received so far, as JSON.

A process of its own keeps its decoding work off the bench's own thread, and lets the bench
report its CPU separately: it shares the machine's cores with the workload, as a node-local
collector would. Like a collector passing spans on, it decodes every request (protobuf's C
decoder) and touches every span (counted, by url.path), but builds no Python object per span:
that costs the tests' receiver 25 us a span, more than the agent that produced it, and on
these two cores that work would be charged to nginx's own time.
"""

from __future__ import annotations

import json
import signal
import sys

from tests.otlp_receiver import OtlpReceiver


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with OtlpReceiver(keep_spans=False) as receiver:
        print(f"ready {receiver.grpc_port} {receiver.http_port}", flush=True)
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "count":
                answer = str(receiver.path_count(argument))
            elif command == "total":
                answer = str(receiver.span_count())
            elif command == "clear":
                receiver.clear()
                answer = "ok"
            elif command == "requests":
                answer = json.dumps(receiver.requests)
            elif command == "quit":
                break
            else:
                answer = f"error unknown command {command!r}"
            print(answer, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
