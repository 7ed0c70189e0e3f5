"""Bounded state: a customer inactive for CX_STATE_TTL_DAYS is deleted from the worker's store
with a tombstone in the changelog, found through the expiry index (no scan); active customers
stay, and the state-size gauge follows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone

from cxsignals.state_cmd import read_changelog
from tests.integration.conftest import Stack, WorkerProcess, publish
from tests.integration.services import wait_until
from tests.journeys import make_event

TTL_S = 10.0


def _view(customer: str, n: int) -> tuple[bytes, bytes]:
    event = make_event(customer, f"{customer}-{n}", "page_view", datetime.now(timezone.utc),
                       {"url": "/"})
    return customer.encode(), json.dumps(event.model_dump(mode="json", exclude_none=True)).encode()



def test_inactive_customers_are_tombstoned_and_active_ones_kept(
    stack: Stack, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(CX_STATE_TTL_DAYS=str(TTL_S / 86_400), CX_TICK_INTERVAL_S="1",
                          CX_CHECKPOINT_INTERVAL_MS="200")
    topic = stack.settings().topic_touchpoints
    bootstrap = stack.endpoints.kafka_bootstrap
    publish(bootstrap, topic, [_view("idle", 0), _view("busy", 0)])
    wait_until(lambda: worker.metric("cx_events_processed_total") >= 2, 30, "two events")
    started = time.monotonic()
    n = 0
    # "busy" stays active (an event every 4 s) while "idle" goes stale
    while time.monotonic() - started < TTL_S + 10:
        n += 1
        publish(bootstrap, topic, [_view("busy", n)])
        time.sleep(4)
    assert worker.metric("cx_states_expired_total") == 1
    changelog = f"{stack.settings().app_id}-customer-state-changelog"
    last = read_changelog(bootstrap, changelog)  # to its end offsets, latest per key
    assert last[b"idle"].value is None, "no tombstone for the idle customer"
    assert last[b"busy"].value is not None
    wait_until(lambda: worker.metric("cx_customers_in_state") == 1, 20,
               "the state-size gauge to count the one customer left")

    # A restarted worker recovers without the expired customer: by now "busy" goes stale too,
    # and it is the only one the restarted worker expires (a resurrected "idle" would be two).
    worker.stop()
    restarted = start_worker(CX_STATE_TTL_DAYS=str(TTL_S / 86_400), CX_TICK_INTERVAL_S="1")
    wait_until(lambda: restarted.metric("cx_states_expired_total") >= 1, 60,
               "the restarted worker to expire the customer who went quiet")
    wait_until(lambda: restarted.metric("cx_customers_in_state") == 0, 30,
               "the state-size gauge to reach 0")
    time.sleep(2)
    assert restarted.metric("cx_states_expired_total") == 1
