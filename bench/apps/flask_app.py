"""A small Flask app served by waitress (a threaded WSGI server with keep-alive), for scenario 2.

    python bench/apps/flask_app.py PORT bare
    python bench/apps/flask_app.py PORT otel OTLP_GRPC_ENDPOINT

`bare` is the app alone (traced by otelbpf from outside, or not at all). `otel` is the same app
instrumented in-process by OpenTelemetry's own Flask instrumentation, exporting spans and
metrics over OTLP/gRPC with the SDK's batch span processor and periodic metric reader, which
read the same OTEL_BSP_* and OTEL_METRIC_EXPORT_INTERVAL variables as the agent's SDK.
It prints "ready" once it listens, and on SIGTERM flushes what it holds and exits.
"""

from __future__ import annotations

import signal
import sys

from flask import Flask, jsonify
from waitress.server import create_server

app = Flask(__name__)

ITEMS = {
    n: {"id": n, "name": f"item {n}", "tags": ["a", "b"], "price": n * 1.5} for n in range(100)
}


@app.get("/api/items/<int:item_id>")
def item(item_id: int):  # noqa: ANN201 - a Flask view
    found = ITEMS.get(item_id % 100)
    return jsonify(found)


def instrument(endpoint: str) -> tuple[object, object]:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # service.name from OTEL_SERVICE_NAME
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    )
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, insecure=True))
        ],
    )
    FlaskInstrumentor().instrument_app(
        app, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    return tracer_provider, meter_provider


def main(argv: list[str]) -> int:
    port, mode = int(argv[1]), argv[2]
    providers = instrument(argv[3]) if mode == "otel" else None
    # Werkzeug's own server closes every connection; waitress keeps them alive, as the load
    # generator's clients expect. 8 threads, its default, one process.
    server = create_server(app, host="127.0.0.1", port=port, threads=8, ident="bench")

    def on_term(_signum: int, _frame: object) -> None:
        raise SystemExit  # waitress's loop catches it and stops its worker threads

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("ready", flush=True)
    server.run()
    if providers is not None:
        for provider in providers:
            provider.shutdown()  # flush every span and metric point still held
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
