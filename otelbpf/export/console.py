"""The embedded default: one readable line per span on stdout, for when no collector is set."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv._incubating.attributes.rpc_attributes import (
    RPC_GRPC_STATUS_CODE,
    RPC_SYSTEM,
)
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
)
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME
from opentelemetry.semconv.attributes.url_attributes import URL_FULL, URL_PATH

from otelbpf.export.finished_spans import FinishedSpan


def format_span(span: FinishedSpan) -> str:
    record = span.record
    attributes = record.attributes
    start = datetime.fromtimestamp(record.start_ns / 1e9, tz=UTC)
    duration_ms = (record.end_ns - record.start_ns) / 1e6
    service = span.resource.attributes.get(SERVICE_NAME, "?")
    kind = record.kind.name
    if RPC_SYSTEM in attributes:  # a gRPC call: its name is service/method
        method, target = "RPC", record.name
        status = attributes.get(RPC_GRPC_STATUS_CODE, "-")
    else:
        method = attributes.get(HTTP_REQUEST_METHOD, record.name)
        target = attributes.get(URL_PATH) or attributes.get(URL_FULL) or ""
        status = attributes.get(HTTP_RESPONSE_STATUS_CODE, "-")
    error = " ERROR" if record.is_error else ""
    trace_id = format(span.trace_id, "032x")
    return (
        f"{start:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + f"Z {service} {kind} {method} {target} "
        f"{status} {duration_ms:.2f}ms trace={trace_id}{error}"
    )


class ConsoleLineExporter:
    """Prints each batch of finished spans, one line a span."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._lock = threading.Lock()

    def export(self, spans: Sequence[FinishedSpan]) -> SpanExportResult:
        text = "".join(format_span(span) + "\n" for span in spans)
        with self._lock:
            self._out.write(text)
            self._out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass
