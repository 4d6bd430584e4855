#!/usr/bin/env bash
# Trace a Python http.server and print its spans: the quick start as one script (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &
server=$!
.venv/bin/otelbpf run --port 8000 &
agent=$!
trap 'kill -INT $agent; wait $agent; kill $server' EXIT
sleep 3
for path in / /missing /?q=secret; do curl -s -o /dev/null "http://127.0.0.1:8000$path"; done
sleep 1
