"""The project's real OTLP receiver (tests/otlp_receiver.py) in a process of its own.

Run as ``python -m bench.receiver`` from the repository root. It prints
``ready GRPC_PORT HTTP_PORT`` and then answers one line per command on stdin:

- ``count PATH``: spans received whose url.path (or http.target) is PATH;
- ``total``: all spans received;
- ``clear``: forget everything (keeps memory flat across runs);
- ``requests``: export requests received so far, as JSON.

A process of its own keeps its decoding work off the bench's own thread, and lets the bench
report its CPU separately: it shares the machine's cores with the workload, as a node-local
collector would.
"""

from __future__ import annotations

import json
import signal
import sys

from tests.otlp_receiver import OtlpReceiver


def _path(span: object) -> str | None:
    attributes = span.attributes  # type: ignore[attr-defined]
    return attributes.get("url.path") or attributes.get("http.target")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with OtlpReceiver() as receiver:
        print(f"ready {receiver.grpc_port} {receiver.http_port}", flush=True)
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "count":
                answer = str(sum(1 for span in receiver.spans() if _path(span) == argument))
            elif command == "total":
                answer = str(len(receiver.spans()))
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
