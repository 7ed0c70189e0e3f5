"""The engine's cost once states are full: the latency phase's traffic, replayed without Kafka.

Run: ``.venv/bin/python -m bench.steady_engine [--rate 13000] [--warm-s 60] [--measure-s 15]
[--repeats 4]``.

``bench.engine_bench`` spreads its events over hours, so its states stay small. The latency
phase of ``make bench`` publishes the simulator's traffic at a fixed rate, where about a
thousand customers are in a session at any time: each of them gets several events a second,
and within a minute their states hold every list at its cap and hundreds of remembered ids.
This replays that traffic (``bench.e2e.latency_traffic``, as the phase builds it) through
``Engine.process``: ``--warm-s`` seconds of it to fill the states, then ``--measure-s``
seconds timed ``--repeats`` times from a copy of the warm states. Every
simulated second, the states changed in it are encoded, as a 1-s checkpoint does.

Prints, per repeat and best of them: ``process`` and ``encode`` in us an event, the encoded
bytes an event, and a digest of the alerts and score updates (equal digests: the same outputs;
compare two commits with the same arguments). Single-threaded, no I/O besides the output.

``--in-place`` adds one run on the warm states themselves. A copy decoded from bytes lays each
state's objects out together; states built event by event, as a worker's are, have them spread
over the heap, and both ``process`` and ``encode`` cost more on them (at 9c29786: 21.0 + 3.5 us
from copies, 27.5 + 6.7 us in place; see docs/performance.md). The copies give the stable
figure to compare commits; in place is the one closer to a running worker.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bench.e2e import latency_traffic
from cxsignals.simulator.journeys import generate
from schemas.event_records import Event
from streams.core.engine import Engine, EngineConfig
from streams.core.rules import load_rules
from streams.core.sentiment import VaderAnalyzer
from streams.core.state import CustomerState
from streams.core.validation import Invalid, validate_event

START = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class SteadyRun:
    process_us: float  # Engine.process, per event
    encode_us: float  # to_bytes of each second's changed states, per event
    bytes_per_event: float  # encoded state bytes, per event
    outputs_digest: str  # sha256 of every alert and score update (JSON), in order


def simulated_events(rate_per_s: float, seconds: float, customers: int, seed: int,
                     now: datetime) -> list[Event]:
    """The latency phase's traffic: ``rate_per_s * seconds`` valid simulator events."""
    events = []
    for message in generate(latency_traffic(rate_per_s, seconds, customers, seed, start=START)):
        event = validate_event(message.value, now=now)
        if not isinstance(event, Invalid):
            events.append(event)
    return events


def replay(engine: Engine, states: dict[str, CustomerState], events: list[Event],
           now: datetime, checkpoint_every: int) -> SteadyRun:
    """Apply ``events`` to ``states`` (changed in place), encoding the changed states every
    ``checkpoint_every`` events."""
    clock = time.perf_counter
    digest = hashlib.sha256()
    process_s = encode_s = 0.0
    encoded = 0
    changed: set[str] = set()
    for i, event in enumerate(events, 1):
        customer = event.customer_id or event.anonymous_id or ""
        t0 = clock()
        out = engine.process(states.get(customer), customer, event, now=now)
        process_s += clock() - t0
        states[customer] = out.state
        changed.add(customer)
        for alert in out.alerts:
            digest.update(alert.to_json())
        if out.score_update is not None:
            digest.update(out.score_update.to_json())
        if i % checkpoint_every == 0 or i == len(events):
            t1 = clock()
            for c in changed:
                encoded += len(states[c].to_bytes())
            encode_s += clock() - t1
            changed.clear()
    n = max(1, len(events))
    return SteadyRun(process_s / n * 1e6, encode_s / n * 1e6, encoded / n, digest.hexdigest())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=13_000.0, help="events/s (13000)")
    parser.add_argument("--warm-s", type=float, default=60.0, help="seconds replayed first (60)")
    parser.add_argument("--measure-s", type=float, default=15.0, help="seconds timed (15)")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7, help="the bench run's seed (7)")
    parser.add_argument("--in-place", action="store_true",
                        help="after the repeats, one more run on the warm states themselves, "
                             "as the replay built them (a worker's states), not on copies")
    args = parser.parse_args(argv)
    now = START + timedelta(seconds=args.warm_s + args.measure_s + 60)
    events = simulated_events(args.rate, args.warm_s + args.measure_s, args.customers,
                              args.seed, now)
    warm = int(args.rate * args.warm_s)
    engine = Engine(EngineConfig(), load_rules(None), VaderAnalyzer())
    states: dict[str, CustomerState] = {}
    per_second = max(1, int(args.rate))
    replay(engine, states, events[:warm], now, per_second)
    snapshot = {c: s.to_bytes() for c, s in states.items()}
    print(f"{len(events):,} events, {len(snapshot):,} states after {args.warm_s:g} s "
          f"(mean {sum(map(len, snapshot.values())) / max(1, len(snapshot)):,.0f} bytes)")
    best: SteadyRun | None = None
    for rep in range(max(1, args.repeats)):
        copy = {c: CustomerState.from_bytes(b) for c, b in snapshot.items()}
        run = replay(engine, copy, events[warm:], now, per_second)
        print(f"repeat {rep}: process {run.process_us:.2f} us, encode {run.encode_us:.2f} us, "
              f"{run.bytes_per_event:,.0f} state bytes an event")
        if best is None or run.process_us + run.encode_us < best.process_us + best.encode_us:
            best = run
    assert best is not None
    print(f"best: process {best.process_us:.2f} + encode {best.encode_us:.2f} = "
          f"{best.process_us + best.encode_us:.2f} us an event; outputs "
          f"{best.outputs_digest[:16]}")
    if args.in_place:
        run = replay(engine, states, events[warm:], now, per_second)
        print(f"in place: process {run.process_us:.2f} us, encode {run.encode_us:.2f} us, "
              f"{run.bytes_per_event:,.0f} state bytes an event; outputs "
              f"{run.outputs_digest[:16]}")


if __name__ == "__main__":
    main()
