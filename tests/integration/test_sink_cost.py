"""bench.sink_cost's counted path against the real ClickHouse: every record the sink reads
becomes its row (dead letters included), and the database it wrote is dropped afterwards."""

from __future__ import annotations

from collections import Counter

from clickhouse_driver import Client

from bench.sink_cost import run_sink, sink_records
from cxsignals.settings import ClickHouseParams
from schemas.topics import TopicNames
from tests.integration.services import Endpoints


def test_the_counted_sink_writes_every_record_and_drops_its_database(
        endpoints: Endpoints) -> None:
    topics = TopicNames()
    records = sink_records(2_000, 200, 11)
    by_topic = Counter(r.topic for r in records)
    params = ClickHouseParams.from_url(endpoints.clickhouse_url)
    admin = Client(**params.client_options())
    before = {name for (name,) in admin.execute("SHOW DATABASES")}
    calls: list[str] = []

    written = run_sink(records, endpoints.clickhouse_url, fetch=300, batch_records=700,
                       window=(lambda: calls.append("on"), lambda: calls.append("off")))

    assert calls == ["on", "off"]
    # each event a row; the pre-fill's 0.1 % bad ones a dead letter (the worker's dead letters
    # for them are not stored again: the sink stores only its processing errors)
    assert written["touchpoint_events"] + written.get("dead_letters", 0) == by_topic[
        topics.touchpoints]
    assert written["touchpoint_events"] >= by_topic[topics.touchpoints] * 0.99
    assert 0 < written["customer_scores"] <= by_topic[topics.scores]
    alerts = sum(by_topic[t] for t in (topics.alerts_marketing, topics.alerts_support,
                                       topics.alerts_control))
    assert written.get("alerts", 0) == alerts
    assert {name for (name,) in admin.execute("SHOW DATABASES")} == before
    admin.disconnect()
