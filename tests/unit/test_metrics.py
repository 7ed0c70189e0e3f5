"""Batched histogram observations equal prometheus-client's own ``observe``."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram

from streams.batch_observer import BatchObserver


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value
            for metric in histogram.collect() for s in metric.samples
            if not s.name.endswith("_created")}


def test_a_flushed_batch_equals_one_observe_per_value() -> None:
    registry = CollectorRegistry()
    buckets = (0.5, 1.0, 2.5, 10.0)
    one = Histogram("one", "by observe", buckets=buckets, registry=registry)
    many = Histogram("many", "by batch", buckets=buckets, registry=registry)
    batch = BatchObserver(many)
    rng = random.Random(3)
    values = [rng.choice([0.5, 1.0, 10.0, 11.0, 0.0]) if rng.random() < 0.3
              else rng.uniform(0, 12) for _ in range(500)]
    for value in values:
        one.observe(value)
        batch.observe(value)
    assert _samples(many) != _samples(one)  # nothing reaches the histogram before flush
    batch.flush()
    ones = {(name.replace("one", "many"), le): v for (name, le), v in _samples(one).items()}
    assert _samples(many) == ones
    batch.flush()  # a second flush adds nothing
    assert _samples(many) == ones
