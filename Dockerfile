# otelbpf as a container: run it privileged with the host's pid namespace to trace the node,
#   docker run --rm --privileged --pid=host -e OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317 otelbpf
# or share one workload's pid namespace to run it as a sidecar.
FROM debian:12-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-bpfcc linux-headers-amd64 procps \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/otelbpf
COPY pyproject.toml README.md setup.sh ./
COPY bpf ./bpf
COPY otelbpf ./otelbpf
# setup.sh ends with `otelbpf check`, which needs the host's kernel: build without it
RUN python3 -m venv .venv \
    && mkdir -p .venv/lib/bcc-dist \
    && ln -s /usr/lib/python3/dist-packages/bcc .venv/lib/bcc-dist/bcc \
    && echo /opt/otelbpf/.venv/lib/bcc-dist > "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/otelbpf-bcc.pth" \
    && .venv/bin/pip install --no-cache-dir .
ENTRYPOINT ["/opt/otelbpf/.venv/bin/otelbpf"]
CMD ["run"]
