"""The span batcher: batches by size and by delay, the OTEL_BSP_* variables, drops counted."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanKind

from otelbpf.export.finished_spans import FinishedSpan
from otelbpf.export.http_spans import SpanRecord
from otelbpf.export.span_batches import (
    DEFAULT_MAX_EXPORT_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_SCHEDULE_DELAY_MS,
    SpanBatcher,
)

RECORD = SpanRecord("GET /", SpanKind.SERVER, 1, 2, {}, False, None, {})


def span(n: int) -> FinishedSpan:
    return FinishedSpan(RECORD, Resource({}), n + 1, n + 1, None, None)


class Recorder:
    """An exporter that keeps each batch's span ids and can be told to fail."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.batches: list[list[int]] = []
        self.result = result
        self.raises = False
        self.shut_down = False
        self.exported = threading.Event()

    def export(self, spans: Sequence[FinishedSpan]) -> SpanExportResult:
        self.batches.append([s.span_id - 1 for s in spans])
        self.exported.set()
        if self.raises:
            raise RuntimeError("exporter bug")
        return self.result

    def shutdown(self) -> None:
        self.shut_down = True


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def test_a_full_batch_goes_out_before_the_delay() -> None:
    exporter = Recorder()
    batcher = SpanBatcher(exporter, schedule_delay_ms=600_000, max_export_batch_size=4)
    for n in range(3):
        batcher.add(span(n))
    assert not exporter.exported.wait(0.3)  # three of four: the worker sleeps on
    batcher.add(span(3))
    assert exporter.exported.wait(10)
    assert exporter.batches == [[0, 1, 2, 3]]
    batcher.shutdown()
    assert exporter.batches == [[0, 1, 2, 3]]
    assert exporter.shut_down


def test_the_delay_sends_what_is_queued() -> None:
    exporter = Recorder()
    batcher = SpanBatcher(exporter, schedule_delay_ms=50, max_export_batch_size=100)
    batcher.add(span(0))
    assert exporter.exported.wait(10)
    assert exporter.batches == [[0]]
    batcher.shutdown()


def test_flush_and_shutdown_send_everything_in_batches_of_the_maximum() -> None:
    exporter = Recorder()
    batcher = SpanBatcher(exporter, schedule_delay_ms=600_000, max_export_batch_size=1000)
    batcher.max_export_batch_size = 4  # past the constructor: the worker is not woken
    for n in range(10):
        batcher.add(span(n))
    assert batcher.force_flush()
    assert exporter.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    batcher.add(span(10))
    batcher.shutdown()
    assert exporter.batches[-1] == [10]
    assert (batcher.dropped, batcher.failed) == (0, 0)


def test_a_full_queue_drops_new_spans_counts_them_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exporter = Recorder()
    batcher = SpanBatcher(
        exporter, max_queue_size=5, schedule_delay_ms=600_000, max_export_batch_size=5
    )
    batcher._wake.set = lambda: None  # type: ignore[method-assign]  # a worker that is behind
    with caplog.at_level(logging.WARNING, logger="otelbpf.export.span_batches"):
        for n in range(8):
            batcher.add(span(n))
    assert batcher.dropped == 3
    assert [r.getMessage() for r in caplog.records] == [
        "span export queue full (5 spans): new spans are dropped and counted"
    ]
    del batcher._wake.set  # the worker wakes again
    batcher.shutdown()
    assert exporter.batches == [[0, 1, 2, 3, 4]]  # the oldest were kept


def test_failed_and_raising_exports_are_counted_and_the_worker_goes_on() -> None:
    exporter = Recorder(SpanExportResult.FAILURE)
    batcher = SpanBatcher(exporter, schedule_delay_ms=600_000, max_export_batch_size=2)
    batcher.add(span(0))
    batcher.add(span(1))
    assert exporter.exported.wait(10)
    exporter.exported.clear()
    exporter.raises = True
    batcher.add(span(2))
    batcher.add(span(3))
    assert exporter.exported.wait(10)
    batcher.shutdown()
    assert exporter.batches == [[0, 1], [2, 3]]
    assert batcher.failed == 4


def test_exit_after_a_failed_export_counts_the_queue_instead_of_trying_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A collector that is down: each try costs the exporter's whole timeout, so the exit
    tries at most once more, and only if the collector took the last export."""
    exporter = Recorder(SpanExportResult.FAILURE)
    batcher = SpanBatcher(exporter, schedule_delay_ms=600_000, max_export_batch_size=2)
    batcher.add(span(0))
    batcher.add(span(1))
    assert exporter.exported.wait(10)  # the worker's export failed
    with batcher._export_lock:  # and the worker is done with its pass
        pass
    batcher.max_export_batch_size = 1000  # past the constructor: the worker sleeps on
    for n in range(2, 7):
        batcher.add(span(n))
    with caplog.at_level(logging.WARNING, logger="otelbpf.export.span_batches"):
        batcher.shutdown()
    assert exporter.batches == [[0, 1]]  # nothing tried at the exit
    assert batcher.failed == 7
    assert "5 queued spans are not sent" in caplog.text

    # the collector took the last export, then went away: one try at the exit, in batches
    # of the maximum, and the batches after a failed one are counted, not tried
    exporter = Recorder()
    batcher = SpanBatcher(exporter, schedule_delay_ms=600_000, max_export_batch_size=2)
    batcher.add(span(0))
    batcher.add(span(1))
    assert exporter.exported.wait(10)
    with batcher._export_lock:
        pass
    exporter.result = SpanExportResult.FAILURE
    batcher.max_export_batch_size = 3
    for n in range(2, 9):
        batcher.add(span(n))
    batcher.shutdown()
    assert exporter.batches == [[0, 1], [2, 3, 4]]
    assert batcher.failed == 7


def test_settings_come_from_the_otel_bsp_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "250")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4096")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1024")
    batcher = SpanBatcher(Recorder())
    assert (batcher.schedule_delay_s, batcher.max_queue_size, batcher.max_export_batch_size) == (
        0.25,
        4096,
        1024,
    )
    batcher.shutdown()


def test_bad_variables_warn_and_keep_the_defaults(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "soon")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "-1")
    with caplog.at_level(logging.WARNING, logger="otelbpf.export.span_batches"):
        batcher = SpanBatcher(Recorder())
    assert (batcher.schedule_delay_s, batcher.max_queue_size, batcher.max_export_batch_size) == (
        DEFAULT_SCHEDULE_DELAY_MS / 1000,
        DEFAULT_MAX_QUEUE_SIZE,
        DEFAULT_MAX_EXPORT_BATCH_SIZE,
    )
    assert sorted(r.getMessage() for r in caplog.records) == [
        "OTEL_BSP_MAX_QUEUE_SIZE='-1' must be positive: using 2048",
        "OTEL_BSP_SCHEDULE_DELAY='soon' is not a whole number: using 5000",
    ]
    batcher.shutdown()


def test_a_batch_is_never_larger_than_the_queue() -> None:
    batcher = SpanBatcher(Recorder(), max_queue_size=100, max_export_batch_size=1000)
    assert batcher.max_export_batch_size == 100
    batcher.shutdown()


def test_exit_during_a_failing_export_pass_tries_no_further_batch() -> None:
    """shutdown() while the worker is in the middle of a pass whose export is failing: the
    pass stops after that export, instead of trying every batch left in the queue."""
    release = threading.Event()

    class Stalled(Recorder):
        def export(self, spans: Sequence[FinishedSpan]) -> SpanExportResult:
            result = super().export(spans)
            release.wait(10)  # a collector that is down: the exporter waits out its timeout
            return result

    exporter = Stalled(SpanExportResult.FAILURE)
    batcher = SpanBatcher(exporter, schedule_delay_ms=600_000, max_export_batch_size=2)
    batcher.max_export_batch_size = 1000  # the worker is not woken by the adds below
    for n in range(10):
        batcher.add(span(n))
    batcher.max_export_batch_size = 2
    batcher._wake.set()
    assert exporter.exported.wait(10)  # the worker's pass is in its first export
    stopping = threading.Thread(target=batcher.shutdown)
    stopping.start()
    while not batcher._stopping:
        time.sleep(0.01)
    release.set()
    stopping.join(10)
    assert exporter.batches == [[0, 1]]
    assert batcher.failed == 10
