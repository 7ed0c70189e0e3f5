"""bench/steady_engine.py: the replay is deterministic and measures what it says."""

from __future__ import annotations

from datetime import timedelta

from bench.steady_engine import START, replay, simulated_events
from streams.core.engine import Engine, EngineConfig
from streams.core.rules import load_rules
from streams.core.sentiment import VaderAnalyzer
from streams.core.state import CustomerState


def test_replays_from_the_same_states_give_the_same_outputs() -> None:
    now = START + timedelta(seconds=120)
    events = simulated_events(2_000.0, 3.0, 200, 1, now)
    assert len(events) > 5_000  # a few bad ones are left out
    engine = Engine(EngineConfig(), load_rules(None), VaderAnalyzer())
    states: dict[str, CustomerState] = {}
    warm = replay(engine, states, events[:4_000], now, 2_000)
    assert warm.process_us > 0 and warm.encode_us > 0 and len(states) > 100  # and visitors
    snapshot = {c: s.to_bytes() for c, s in states.items()}
    runs = [replay(engine, {c: CustomerState.from_bytes(b) for c, b in snapshot.items()},
                   events[4_000:], now, 2_000) for _ in range(2)]
    assert runs[0].outputs_digest == runs[1].outputs_digest
    assert runs[0].bytes_per_event == runs[1].bytes_per_event > 0
    # the warm states matter: from empty states the same events give other outputs
    cold = replay(engine, {}, events[4_000:], now, 2_000)
    assert cold.outputs_digest != runs[0].outputs_digest
