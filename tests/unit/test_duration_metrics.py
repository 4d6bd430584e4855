"""The agent's own histogram aggregation gives the points the SDK's Histogram would give."""

from __future__ import annotations

import random

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otelbpf.export import duration_metrics
from otelbpf.export.duration_metrics import DurationHistograms, HistogramSpec
from otelbpf.export.telemetry import HTTP_DURATION_BUCKETS

RESOURCE = Resource({"service.name": "checkout", "process.pid": 101})
SCOPE = InstrumentationScope("otelbpf", "0.1.0")
SPEC = HistogramSpec("http.server.request.duration", "Duration.", "s", HTTP_DURATION_BUCKETS)
OK = {"http.request.method": "GET", "http.route": "/a", "http.response.status_code": 200}
FAILED = {"http.request.method": "POST", "http.route": "/b", "http.response.status_code": 500}


def histograms(
    temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE,
) -> DurationHistograms:
    return DurationHistograms(RESOURCE, SCOPE, {"server": SPEC}, temporality)


def points_of(resource_metrics) -> dict:  # noqa: ANN001
    [scope_metrics] = resource_metrics.scope_metrics
    [metric] = scope_metrics.metrics
    assert (metric.name, metric.unit, metric.description) == (SPEC.name, "s", "Duration.")
    return {
        tuple(sorted(point.attributes.items())): (
            point.count,
            point.sum,
            point.min,
            point.max,
            tuple(point.bucket_counts),
            tuple(point.explicit_bounds),
        )
        for point in metric.data.data_points
    }


def test_same_points_as_the_sdk_histogram() -> None:
    rng = random.Random(7)
    # boundaries themselves included: a value on a bound belongs to the bucket it closes
    values = [rng.uniform(0, 12) for _ in range(500)] + list(HTTP_DURATION_BUCKETS) + [0.0]
    reader = InMemoryMetricReader()
    sdk = (
        MeterProvider(resource=RESOURCE, metric_readers=[reader], shutdown_on_exit=False)
        .get_meter("otelbpf", "0.1.0")
        .create_histogram(
            SPEC.name, unit="s", description="Duration.",
            explicit_bucket_boundaries_advisory=HTTP_DURATION_BUCKETS,
        )
    )  # fmt: skip
    ours = histograms()
    for n, value in enumerate(values):
        attributes = OK if n % 3 else FAILED
        sdk.record(value, attributes)
        ours.record("server", value, dict(reversed(list(attributes.items()))))  # any order
    expected = points_of(reader.get_metrics_data().resource_metrics[0])
    got = ours.collect()
    assert got.resource is RESOURCE and got.scope_metrics[0].scope is SCOPE
    without_sums = {key: (c, mn, mx, b, e) for key, (c, _, mn, mx, b, e) in expected.items()}
    assert {key: (c, mn, mx, b, e) for key, (c, _, mn, mx, b, e) in points_of(got).items()} == (
        without_sums
    )
    for key, point in points_of(got).items():
        assert point[1] == pytest.approx(expected[key][1])  # sums: added in another order
    assert sum(p[0] for p in points_of(got).values()) == len(values)


def test_cumulative_keeps_counting_and_delta_starts_again() -> None:
    cumulative, delta = histograms(), histograms(AggregationTemporality.DELTA)
    for h in (cumulative, delta):
        h.record("server", 0.02, OK)
        h.record("unknown instrument", 0.02, OK)  # ignored
    first_delta = delta.collect()
    assert [p[0] for p in points_of(cumulative.collect()).values()] == [1]
    assert [p[0] for p in points_of(first_delta).values()] == [1]
    assert delta.collect() is None  # nothing new: no point at all
    for h in (cumulative, delta):
        h.record("server", 0.2, OK)
    later = cumulative.collect()
    assert [p[:2] for p in points_of(later).values()] == [(2, pytest.approx(0.22))]
    assert [p[:2] for p in points_of(delta.collect()).values()] == [(1, pytest.approx(0.2))]
    point = later.scope_metrics[0].metrics[0].data.data_points[0]
    assert point.start_time_unix_nano <= point.time_unix_nano
    assert later.scope_metrics[0].metrics[0].data.aggregation_temporality.name == "CUMULATIVE"


def test_too_many_attribute_sets_overflow_into_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(duration_metrics, "MAX_SERIES", 4)
    h = histograms()
    for n in range(10):
        h.record("server", 0.01, {"http.route": f"/r{n}"})
    points = points_of(h.collect())
    assert len(points) == 4
    assert points[(("otel.metric.overflow", True),)][0] == 7
    assert sum(p[0] for p in points.values()) == 10


def test_one_shared_dict_counts_as_its_equal_copies_do() -> None:
    """HttpSpanMemo hands one dict to every repeat: found by identity, it must land in the
    series its equal copies land in, and per instrument."""
    client_spec = HistogramSpec("http.client.request.duration", "Duration.", "s", SPEC.boundaries)
    h = DurationHistograms(RESOURCE, SCOPE, {"server": SPEC, "client": client_spec})
    shared = dict(OK)
    for n in range(6):
        h.record("server", 0.01 * (n + 1), shared)
        h.record("server", 0.5, dict(OK))  # an equal copy: the same series
        h.record("client", 0.3, shared)  # the same dict under another instrument
    [scope_metrics] = h.collect().scope_metrics
    counts = {m.name: [p.count for p in m.data.data_points] for m in scope_metrics.metrics}
    assert counts == {SPEC.name: [12], client_spec.name: [6]}
