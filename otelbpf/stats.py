"""What the agent saw and what it lost: counted, exported as its own metrics, summarised at exit."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otelbpf.abi import Counter


class AgentStats:
    """Plain counters bumped by the pipeline thread; read by the metrics pump."""

    def __init__(self) -> None:
        self.exchanges = 0  # exchange events received from the kernel
        self.spans = 0  # spans handed to the export stage
        self.outcomes: Tally[str] = Tally()  # exchanges that gave no span, by why
        self.kernel: dict[Counter, int] = {counter: 0 for counter in Counter}
        self.bad_records = 0  # ring-buffer records too short for their type
        self.internal_errors = 0  # exceptions of our own, caught so tracing goes on
        # the export stage's losses, read when asked: spans the full queue dropped, and spans
        # in batches the exporter could not deliver
        self.export_losses: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def skipped(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    @property
    def drops(self) -> int:
        return self.kernel[Counter.DROPS]

    def register(self, meter: Meter) -> None:
        meter.create_observable_counter(
            "otelbpf.exchanges",
            callbacks=[self._observe_exchanges],
            unit="{exchange}",
            description="Request/response exchanges received from the kernel, by outcome.",
        )
        meter.create_observable_counter(
            "otelbpf.ringbuf.drops",
            callbacks=[lambda _options: [Observation(self.drops)]],
            unit="{event}",
            description="Events lost because the kernel ring buffer was full.",
        )
        meter.create_observable_counter(
            "otelbpf.connections.untracked",
            callbacks=[lambda _options: [Observation(self.kernel[Counter.CONN_FULL])]],
            unit="{connection}",
            description="Connections not tracked because the connection map was full.",
        )
        meter.create_observable_counter(
            "otelbpf.spans.lost",
            callbacks=[self._observe_export_losses],
            unit="{span}",
            description="Spans built but not delivered to the collector, by why.",
        )

    def _observe_export_losses(self, _options: CallbackOptions) -> Iterable[Observation]:
        dropped, failed = self.export_losses()
        yield Observation(dropped, {"reason": "queue_full"})
        yield Observation(failed, {"reason": "export_failed"})

    def _observe_exchanges(self, _options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self.spans, {"outcome": "span"})
        for outcome, count in self.outcomes.items():
            yield Observation(count, {"outcome": outcome})

    def summary(self) -> str:
        parts = [f"{self.exchanges} exchanges", f"{self.spans} spans"]
        parts += [f"{count} {outcome}" for outcome, count in sorted(self.outcomes.items())]
        parts.append(f"{self.drops} ring-buffer drops")
        if self.kernel[Counter.CONN_FULL]:
            parts.append(f"{self.kernel[Counter.CONN_FULL]} connections untracked (map full)")
        dropped, failed = self.export_losses()
        if dropped:
            parts.append(f"{dropped} spans dropped (export queue full)")
        if failed:
            parts.append(f"{failed} spans not delivered (export failed)")
        if self.bad_records:
            parts.append(f"{self.bad_records} malformed records")
        if self.internal_errors:
            parts.append(f"{self.internal_errors} internal errors")
        return ", ".join(parts)
