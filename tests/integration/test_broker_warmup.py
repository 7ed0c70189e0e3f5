"""The bench's broker JIT warm-up against the real services: it runs the pipeline (a fresh
worker and sink fed by the paced publisher), watches the local broker's compiler threads, stops
within its time limit and leaves no topic, group or database behind."""

from __future__ import annotations

import uuid
from pathlib import Path

from clickhouse_driver import Client
from kafka.admin import KafkaAdminClient

from bench.broker_warmup import quiet, warm_broker
from bench.stack import BenchStack, compiler_seconds, service_pid
from cxsignals.settings import ClickHouseParams
from tests.integration.services import REPO, Endpoints


def test_the_warmup_runs_the_pipeline_watches_the_jit_and_cleans_up(
        endpoints: Endpoints, tmp_path: Path) -> None:
    pid = service_pid("kafka", REPO / ".state")
    assert endpoints.origin == "deploy/local" and pid is not None, (
        f"no .state/kafka.pid for the broker ({endpoints.origin}): the warm-up watches the JIT "
        "of a broker this checkout started (make services)")
    before = compiler_seconds(pid)
    assert before is not None, f"pid {pid} has no JIT compiler threads: not the Kafka JVM"
    stack = BenchStack(endpoints.kafka_bootstrap, endpoints.clickhouse_url, tmp_path, "warmup",
                       run_id=uuid.uuid4().hex[:8])

    warm = warm_broker(stack, pid=pid, worker_cpus=[None], sink_cpu=None, rate_per_s=2_000.0,
                       customers=200, seed=3, max_s=9.0, window_s=3.0)

    windows = warm.compiler_share_by_window
    assert 1 <= len(windows) <= 4  # 3 s windows (plus publishing and flushing) within 9 s
    assert warm.published == 6_000 * len(windows)  # every window's events delivered
    assert all(0.0 <= share < 4.0 for share in windows)
    assert warm.quiet == quiet(windows)
    assert 0.0 <= warm.compiler_cpu_s <= (compiler_seconds(pid) or 0.0) - before
    assert warm.seconds < 9.0 + 15.0
    assert warm.cleanup_problems == []
    admin = KafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
    try:
        assert [t for t in admin.list_topics() if t.startswith(stack.prefix)] == []
    finally:
        admin.close()
    params = ClickHouseParams.from_url(endpoints.clickhouse_url)
    client = Client(**params.client_options())
    try:
        assert client.execute("SELECT count() FROM system.databases WHERE name = %(name)s",
                              {"name": stack.database}) == [(0,)]
    finally:
        client.disconnect()
