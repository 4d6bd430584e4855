#!/usr/bin/env bash
# One-command set-up on Debian 12 (as root): installs what is missing and leaves the agent at
# .venv/bin/otelbpf. `./setup.sh --test` also installs what the test suite runs (nginx, curl,
# openssl, gnutls-cli, Go, Node.js, h2load, MariaDB, pytest and the benchmark suite's packages). Safe to run again: it only installs
# what is missing.
set -euo pipefail
cd "$(dirname "$0")"

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (sudo ./setup.sh): it installs packages with apt-get" >&2
    exit 1
fi

missing=()
need() { dpkg -s "$1" >/dev/null 2>&1 || missing+=("$1"); }
need python3-bpfcc        # bcc: compiles and loads the BPF programs (Debian ships its binding)
# bcc compiles at run time against kernel headers; use Debian's generic ones when the running
# kernel has none. otelbpf merges them into /var/cache/otelbpf, never into /lib/modules.
if [ ! -d "/lib/modules/$(uname -r)/build/include" ]; then
    case "$(dpkg --print-architecture)" in
        amd64) need linux-headers-amd64 ;;
        arm64) need linux-headers-arm64 ;;
    esac
fi
if [ "$with_tests" = 1 ]; then
    need nginx                # a real server under test
    need curl                 # a real client under test
    need openssl              # makes the TLS tests' certificate
    need gnutls-bin           # gnutls-cli: a GnuTLS client under test
    need nghttp2-client       # h2load: the benchmark suite's fixed-rate load (smoke-tested)
    need gcc                  # builds the benchmark suite's syscall-tax loop (bench/apps/request_loop.c)
    need libc6-dev            # its C headers (gcc only recommends them)
    need golang-go            # builds the Go crypto/tls server under test
    need mariadb-server       # a database whose binary protocol must not pass for HTTP/2
    need mariadb-client       # its client
    command -v node >/dev/null 2>&1 || need nodejs   # a Node.js https server under test
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need python3-venv
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ "$with_tests" = 1 ]; then
    # the distribution's nginx and MariaDB start themselves on install; tests run their own
    systemctl disable --now nginx >/dev/null 2>&1 || true
    pkill -x nginx >/dev/null 2>&1 || true
    systemctl disable --now mariadb >/dev/null 2>&1 || true
    pkill -x mariadbd >/dev/null 2>&1 || true
fi

python=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# bcc's Python binding lives in the system's dist-packages; expose only that package.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p .venv/lib/bcc-dist
ln -sfn /usr/lib/python3/dist-packages/bcc .venv/lib/bcc-dist/bcc
echo "$PWD/.venv/lib/bcc-dist" > "$site/otelbpf-bcc.pth"

extras=""
[ "$with_tests" = 1 ] && extras="[test,bench]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"

.venv/bin/otelbpf check
echo "setup.sh: ready: .venv/bin/otelbpf run"
