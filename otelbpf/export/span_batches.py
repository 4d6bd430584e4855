"""Export stage: finished spans queue here; one thread hands them to the exporter in batches.

What the SDK's BatchSpanProcessor does, for FinishedSpan rather than ReadableSpan, with the
same variables (OTEL_BSP_SCHEDULE_DELAY, _MAX_QUEUE_SIZE, _MAX_EXPORT_BATCH_SIZE) and
defaults. As in the SDK, each export request is bounded by the exporter's own timeout
(OTEL_EXPORTER_OTLP_TIMEOUT), not by OTEL_BSP_EXPORT_TIMEOUT. One difference, on purpose:
a full queue drops the new span and counts it, with one warning, where the SDK logs a
warning for every span it drops, which under overload is the agent writing a line per
request.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from opentelemetry.sdk.environment_variables import (
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    OTEL_BSP_MAX_QUEUE_SIZE,
    OTEL_BSP_SCHEDULE_DELAY,
)
from opentelemetry.sdk.trace.export import SpanExportResult

from otelbpf.export.finished_spans import FinishedSpan

log = logging.getLogger(__name__)

# the specification's defaults, as the SDK's BatchSpanProcessor has them
DEFAULT_SCHEDULE_DELAY_MS = 5000
DEFAULT_MAX_QUEUE_SIZE = 2048
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512


class FinishedSpanExporter(Protocol):
    """What the batcher hands batches to: the OTLP exporters and the console printer."""

    def export(self, spans: Sequence[FinishedSpan]) -> SpanExportResult: ...

    def shutdown(self) -> None: ...


def int_setting(variable: str, given: int | None, default: int) -> int:
    """given, else the variable's positive whole number; empty is unset, and anything else
    is a warning and the default (as the SDK's readers of OTEL_BSP_* and the like do)."""
    if given is not None:
        return given
    text = os.environ.get(variable)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        log.warning("%s=%r is not a whole number: using %d", variable, text, default)
        return default
    if value <= 0:
        log.warning("%s=%r must be positive: using %d", variable, text, default)
        return default
    return value


class SpanBatcher:
    """A bounded queue of finished spans and the thread that exports them: a batch when
    max_export_batch_size are queued, and whatever is queued every schedule delay."""

    def __init__(
        self,
        exporter: FinishedSpanExporter,
        max_queue_size: int | None = None,
        schedule_delay_ms: int | None = None,
        max_export_batch_size: int | None = None,
    ) -> None:
        self.exporter = exporter
        self.max_queue_size = int_setting(
            OTEL_BSP_MAX_QUEUE_SIZE, max_queue_size, DEFAULT_MAX_QUEUE_SIZE
        )
        self.schedule_delay_s = (
            int_setting(OTEL_BSP_SCHEDULE_DELAY, schedule_delay_ms, DEFAULT_SCHEDULE_DELAY_MS)
            / 1000
        )
        self.max_export_batch_size = min(
            self.max_queue_size,
            int_setting(
                OTEL_BSP_MAX_EXPORT_BATCH_SIZE, max_export_batch_size, DEFAULT_MAX_EXPORT_BATCH_SIZE
            ),
        )
        self.dropped = 0  # spans that found the queue full
        self.failed = 0  # spans in batches the exporter could not send
        # the last export failed: the final flush at exit then counts what is queued as lost
        # rather than wait out the exporter's timeout once more (a collector that is down
        # would otherwise hold the exit for OTEL_EXPORTER_OTLP_TIMEOUT per batch)
        self._collector_down = False
        self._queue: deque[FinishedSpan] = deque()
        self._wake = threading.Event()
        self._export_lock = threading.Lock()  # one export at a time: worker or flush
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name="otelbpf-spans", daemon=True)
        self._worker.start()

    def add(self, span: FinishedSpan) -> None:
        """Called per span by the pipeline thread: append, wake the worker on a full batch."""
        queue = self._queue
        if len(queue) >= self.max_queue_size:
            if not self.dropped:
                log.warning(
                    "span export queue full (%d spans): new spans are dropped and counted",
                    self.max_queue_size,
                )
            self.dropped += 1
            return
        queue.append(span)
        if len(queue) >= self.max_export_batch_size and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.schedule_delay_s)
            self._wake.clear()
            self._export_queued()

    def _export_queued(self) -> None:
        with self._export_lock:
            queue = self._queue
            while queue:
                # stopping, after a failed export: also ends a pass under way when shutdown()
                # comes, or the exit would wait out the exporter's timeout once per batch
                if self._stopping and self._collector_down:
                    lost = len(queue)
                    queue.clear()
                    self.failed += lost
                    log.warning(
                        "the collector did not take the last export: %d queued spans are "
                        "not sent (counted as lost)",
                        lost,
                    )
                    return
                size = min(len(queue), self.max_export_batch_size)
                batch = [queue.popleft() for _ in range(size)]
                try:
                    result = self.exporter.export(batch)
                except Exception:  # an exporter bug costs that batch, never the agent
                    log.exception("span export raised")
                    result = SpanExportResult.FAILURE
                self._collector_down = result is not SpanExportResult.SUCCESS
                if self._collector_down:
                    self.failed += len(batch)

    def force_flush(self) -> bool:
        """Export everything queued now, from the caller's thread."""
        self._export_queued()
        return not self._queue

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self._worker.join(timeout=5)
        self._export_queued()
        self.exporter.shutdown()
