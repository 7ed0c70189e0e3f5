"""bench/steady_engine.py: the replay is deterministic and measures what it says."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bench.steady_engine import START, main, replay, simulated_events
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


def test_in_place_runs_on_the_warm_states_and_gives_the_copies_outputs(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.steady_engine as steady

    replayed_on: list[dict[str, CustomerState]] = []

    def recording_replay(engine: Engine, states: dict[str, CustomerState], *args: object,
                         **kwargs: object) -> steady.SteadyRun:
        replayed_on.append(states)
        return replay(engine, states, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(steady, "replay", recording_replay)
    main(["--rate", "1000", "--warm-s", "3", "--measure-s", "2", "--repeats", "1",
          "--customers", "200", "--in-place"])
    # warm-up, one repeat on a copy, then in place: on the very states the warm-up built
    warmed, copy, in_place_states = replayed_on
    assert in_place_states is warmed and copy is not warmed
    lines = capsys.readouterr().out.splitlines()
    best = next(line for line in lines if line.startswith("best:"))
    in_place = next(line for line in lines if line.startswith("in place:"))
    # the same events from the same states: the same outputs, whatever the memory layout
    assert best.rsplit("outputs ", 1)[1] == in_place.rsplit("outputs ", 1)[1]
    main(["--rate", "1000", "--warm-s", "3", "--measure-s", "2", "--repeats", "1",
          "--customers", "200"])
    assert not any(line.startswith("in place:") for line in capsys.readouterr().out.splitlines())
