"""Cost of time-aware churn risk (docs/scoring.md, "Time-aware risk"), on the engine bench's
synthetic customers (no Kafka).

Run: ``.venv/bin/python -m bench.idle_risk_bench [n_events] [n_customers]``. Prints:

* ``risk_eval_us``: one churn-risk evaluation (``ChurnScorer``);
* ``search_us`` and ``search_evals``: the wake-up search per customer
  (``Engine.risk_wakeup_s``), with the crossing ahead (from the last event) and already due;
* ``pending_writes_off_us`` / ``pending_writes_on_us``: ``Processor.pending_writes`` (the
  checkpoint's serialization, plus the first look with time-aware risk on) per changed customer;
* ``tick_us``: ``Processor.tick`` of an idle customer (the look and the next search).

Best of ``repeats`` runs each (the development box is shared).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

from bench.engine_bench import synthetic_events
from schemas.event_records import Event
from schemas.topics import TopicNames
from streams.core.churn import ChurnScorer
from streams.core.engine import Engine, EngineConfig
from streams.core.rules import load_rules
from streams.core.sentiment import VaderAnalyzer
from streams.core.state import CustomerState
from streams.processing import Processor

NOW = datetime(2024, 5, 6, 16, tzinfo=timezone.utc)


def _processor(events: list[Event], horizon_days: float) -> Processor:
    engine = Engine(EngineConfig(idle_risk_horizon_days=horizon_days), load_rules(None),
                    VaderAnalyzer())
    processor = Processor(engine, lambda partition, key: None, TopicNames(),
                          max_cached_states=0)
    for e in events:
        processor.process(e.customer_id or "", 0, e, NOW)
    return processor


def _states(processor: Processor) -> list[CustomerState]:
    return [s for s, _p, _c in processor._dirty.values() if isinstance(s, CustomerState)]


def _best(fn: Callable[[], float], repeats: int) -> float:
    return min(fn() for _ in range(max(1, repeats)))


def run(n_events: int = 20_000, n_customers: int = 2_000, repeats: int = 3) -> dict[str, float]:
    events = synthetic_events(n_events, n_customers)
    out: dict[str, float] = {"customers": 0.0}
    on = _processor(events, 400.0)
    states = _states(on)
    out["customers"] = len(states)
    engine = on.engine
    assert isinstance(engine, Engine)
    scorer: ChurnScorer = engine._churn_risk
    calls = [0]

    def counted(st: CustomerState, score: float, at_s: float | None = None) -> float:
        calls[0] += 1
        return scorer(st, score, at_s)

    def evals() -> float:
        t0 = time.perf_counter()
        for st in states:
            scorer(st, st.score, (st.watermark or 0.0) + 86_400)
        return (time.perf_counter() - t0) / len(states)

    out["risk_eval_us"] = _best(evals, repeats) * 1e6
    wakeups = engine._risk_wakeups
    assert wakeups is not None
    for label, ahead_s in (("ahead", 0.0), ("due", 400 * 86_400.0)):
        def search(ahead_s: float = ahead_s) -> float:
            t0 = time.perf_counter()
            for st in states:
                engine.risk_wakeup_s(st, (st.watermark or 0.0) + ahead_s)
            return (time.perf_counter() - t0) / len(states)

        out[f"search_{label}_us"] = _best(search, repeats) * 1e6
        wakeups._scorer = counted  # type: ignore[assignment]
        calls[0] = 0
        for st in states:
            engine.risk_wakeup_s(st, (st.watermark or 0.0) + ahead_s)
        wakeups._scorer = scorer
        out[f"search_{label}_evals"] = calls[0] / len(states)
    latest = max(st.watermark or 0.0 for st in states)
    for label, horizon in (("off", 0.0), ("on", 400.0)):
        def writes(horizon: float = horizon) -> float:
            processor = _processor(events, horizon)
            t0 = time.perf_counter()
            done = processor.pending_writes(latest)
            return (time.perf_counter() - t0) / len(done)

        out[f"pending_writes_{label}_us"] = _best(writes, repeats) * 1e6
    on.pending_writes(latest)
    ids = list(on._dirty)
    for customer_id in ids:  # handed out, they are kept encoded: decode them before timing
        on._load(customer_id, 0)
    later = datetime.fromtimestamp(latest + 400, timezone.utc)
    t0 = time.perf_counter()
    for customer_id in ids:
        on.tick(customer_id, 0, later)
    out["tick_us"] = (time.perf_counter() - t0) / len(ids) * 1e6
    return out


def main() -> None:
    args = [int(a) for a in sys.argv[1:]]
    for key, value in run(*args).items():
        print(f"{key}: {value:.1f}")


if __name__ == "__main__":
    main()
