"""The one door to Faust internals: version check, and acked ranges that Faust's own commit
logic turns into the right offsets."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.faust_internals import (
    PINNED_VERSIONS,
    BatchConsumer,
    UnsupportedVersion,
    check_versions,
)


def test_the_installed_versions_are_the_pinned_ones() -> None:
    check_versions()


def test_another_version_is_refused_with_a_clear_message() -> None:
    versions = {**PINNED_VERSIONS, "aiokafka": "0.99.0"}
    with pytest.raises(UnsupportedVersion, match=r"aiokafka 0\.99\.0 \(needs 0\.14\.0\)"):
        check_versions(versions.__getitem__)


def _consumer(committed: int | None) -> Any:
    fake = SimpleNamespace(
        _acked=defaultdict(list), _acked_index=defaultdict(set), _n_acked=0,
        _committed_offset=defaultdict(lambda: None), _gap=defaultdict(IntervalTree),
        _next_ack={},
    )
    if committed is not None:
        fake._committed_offset[TP("t", 0)] = committed
    return fake


def _commit_offset(fake: Any, tp: TP) -> int | None:
    offset = Consumer._new_offset(fake, tp)
    if offset is not None:
        fake._committed_offset[tp] = offset
    return offset


def test_acked_ranges_commit_through_their_last_offset() -> None:
    tp = TP("t", 0)
    fake = _consumer(committed=100)
    BatchConsumer.ack_range(fake, tp, 100, 149)
    assert _commit_offset(fake, tp) == 150
    BatchConsumer.ack_range(fake, tp, 150, 150)
    BatchConsumer.ack_range(fake, tp, 151, 199)
    assert _commit_offset(fake, tp) == 200


def test_a_gap_between_fetches_is_acked_too() -> None:
    """Offsets with no record (transaction markers, compaction) would otherwise stop the
    commits forever: Faust commits only consecutive acked offsets."""
    tp = TP("t", 0)
    fake = _consumer(committed=10)
    BatchConsumer.ack_range(fake, tp, 10, 19)
    BatchConsumer.ack_range(fake, tp, 25, 30)  # 20..24 held no records
    assert _commit_offset(fake, tp) == 31


def test_a_new_group_starts_from_the_first_record() -> None:
    tp = TP("t", 0)
    fake = _consumer(committed=None)
    BatchConsumer.ack_range(fake, tp, 0, 9)
    assert _commit_offset(fake, tp) == 10


def test_fetched_records_left_out_of_a_paused_partition_are_fetched_again() -> None:
    """Records of a partition paused between the fetch and the hand-over were not processed:
    the consumer must go back to them (a source: or the next range's ack would close the gap
    over them; a standby changelog: or the standby copy would miss them)."""
    fetched, paused, revoked = TP("t", 0), TP("t", 1), TP("t", 2)
    changelog, paused_changelog = TP("changelog", 0), TP("changelog", 1)
    rec = SimpleNamespace
    records = {fetched: [rec(offset=5), rec(offset=6)], paused: [rec(offset=40), rec(offset=41)],
               revoked: [rec(offset=7)], changelog: [rec(offset=1)],
               paused_changelog: [rec(offset=0), rec(offset=1), rec(offset=2)]}
    fake: Any = SimpleNamespace(batch_topics=frozenset({"t"}), _buffered_partitions=set(),
                           assignment=lambda: {fetched, paused, changelog, paused_changelog})
    ours, others, left_out = BatchConsumer._split(fake, records, {fetched, changelog})
    assert ours == {fetched: records[fetched]}
    assert others == [(changelog, records[changelog][0])]
    assert BatchConsumer.skipped_ranges(fake, left_out) == {
        paused: (40, 41), paused_changelog: (0, 2)}


def test_wait_for_broker_backs_off_and_names_the_reason() -> None:
    import asyncio

    from streams.faust_internals import probe_broker, wait_for_broker
    from tests.integration.services import free_port

    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    reason = asyncio.run(probe_broker(bootstrap, timeout_s=1))
    assert reason is not None and "KafkaConnectionError" in reason
    waits: list[tuple[int, float]] = []

    def on_wait(why: str, attempt: int, retry_in_s: float) -> None:
        assert "KafkaConnectionError" in why
        waits.append((attempt, retry_in_s))

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(wait_for_broker(bootstrap, on_wait, first_s=0.05, max_s=0.2),
                                   1.0)

    asyncio.run(main())
    assert [a for a, _ in waits] == list(range(1, len(waits) + 1))
    delays = [d for _, d in waits]
    assert delays[:3] == [0.05, 0.1, 0.2] and max(delays) == 0.2


def _stopping_consumer(drain_s: float, calls: list[str]) -> Any:
    import asyncio

    async def drain() -> None:
        await asyncio.sleep(drain_s)
        calls.append("drain")

    async def commit() -> bool:
        calls.append("commit")
        return True

    return SimpleNamespace(batch_lock=asyncio.Lock(), batch_drain=drain, commit=commit,
                           stop_drain_timeout_s=0.2, stop_commit_timeout_s=0.2,
                           _finishing=False)


def test_a_graceful_stop_drains_then_commits_and_takes_no_further_fetch() -> None:
    import asyncio

    calls: list[str] = []
    fake = _stopping_consumer(0.01, calls)
    assert asyncio.run(BatchConsumer.finish_batches(fake)) is True
    assert calls == ["drain", "commit"]
    assert fake._finishing  # the fetch loop hands nothing more to the pipeline


def test_a_stop_that_cannot_drain_in_time_commits_nothing() -> None:
    import asyncio

    calls: list[str] = []
    fake = _stopping_consumer(5.0, calls)
    assert asyncio.run(BatchConsumer.finish_batches(fake)) is False
    assert calls == []  # not durable: not committed, processed again by the next owner


def test_fetch_coalescing_settings_reach_the_aiokafka_consumer(tmp_path: Any) -> None:
    """Faust builds its aiokafka consumer with a 1-byte minimum (a fetch every few events under
    a trickle); the worker's consumer thread gets the configured minimum and wait instead."""
    import asyncio

    from streams.app import create_worker
    from streams.config import WorkerConfig

    async def build() -> Any:
        worker = create_worker(WorkerConfig(state_dir=tmp_path, fetch_min_bytes=12_345,
                                            fetch_max_wait_ms=17))
        thread = cast(Any, worker.app.consumer)._new_consumer_thread()
        return thread._create_consumer(asyncio.get_running_loop())

    consumer = asyncio.run(build())
    assert (consumer._fetch_min_bytes, consumer._fetch_max_wait_ms) == (12_345, 17)
    # A topic created just before the first assignment is picked up within seconds, not
    # after aiokafka's 5-minute default (a worker start that never reported Ready).
    assert consumer._client._metadata_max_age_ms == 10_000


def test_the_worker_tables_open_rocksdb_with_the_configured_memory_limits(tmp_path: Path) -> None:
    """Faust's defaults (3 x 64 MiB memtables, a 2 GiB block cache per table partition) let a
    live worker's RSS grow by ~9 MB/s; the settings bound it. Checked in the OPTIONS file that
    RocksDB itself writes for a partition database opened with the tables' options."""
    import asyncio

    from streams.app import create_worker
    from streams.config import WorkerConfig

    async def build() -> Any:
        worker = create_worker(WorkerConfig(state_dir=tmp_path / "state",
                                            rocksdb_write_buffer_mb=3, rocksdb_block_cache_mb=5))
        return list(worker.app.tables.values())

    tables = asyncio.run(build())
    assert len(tables) == 2  # customer states and identity links
    for i, table in enumerate(tables):
        opts = table.data.rocksdb_options
        assert (opts.write_buffer_size, opts.max_write_buffer_number,
                opts.block_cache_size) == (3 * 2**20, 2, 5 * 2**20)
        db_dir = tmp_path / f"db-{i}"
        db = opts.open(db_dir)
        db.close()
        written = "".join(p.read_text() for p in db_dir.glob("OPTIONS-*"))
        assert "write_buffer_size=3145728" in written
        assert "max_write_buffer_number=2" in written


_KILLED_AFTER_PUT = """
import os, sys
from types import SimpleNamespace
from rocksdict import Options, Rdict
from streams.faust_internals import TablePartitions
db = Rdict(sys.argv[1], options=Options(raw_mode=True))  # as Faust opens its partitions
store = SimpleNamespace(_db_for_partition=lambda partition: db)
table = TablePartitions(SimpleNamespace(data=store, name="states"))
table.put_many(0, [(b"state", b"2")])
table.put_many(0, [(b"gone", b"3")])
table.put_many(0, [(b"gone", None)])
table.put_many(0, [(b"batched-1", b"4"), (b"batched-2", b"5"), (b"state", None)])
table.put_many(0, [(b"state", b"6")])
if sys.argv[2] == "close":
    db.close()
elif sys.argv[2] == "dropped":  # how Faust closes a partition: it drops the handle
    del db
os._exit(0)  # no clean shutdown, no garbage collection
"""


@pytest.mark.parametrize("ending", ["killed", "close", "dropped"])
def test_table_writes_are_durable_when_put_returns_however_the_process_ends(
        tmp_path: Path, ending: str) -> None:
    """The worker's state writes go through RocksDB's write-ahead log: a process killed before
    any flush, or one that dropped the handle without it being collected (Faust's way of
    closing a partition), reopens with them, a write batch of one and of several alike. Without the
    log the killed case loses them and a standby promoted in a rebalance scored customers from
    incomplete states."""
    import subprocess
    import sys

    from rocksdict import Options, Rdict

    path = tmp_path / "db"
    subprocess.run([sys.executable, "-c", _KILLED_AFTER_PUT, str(path), ending], check=True,
                   cwd=Path(__file__).resolve().parents[2])
    db = Rdict(str(path), options=Options(raw_mode=True))
    try:
        assert db.get(b"state") == b"6"  # put, deleted in a batch, put again in a batch
        assert db.get(b"gone") is None
        assert (db.get(b"batched-1"), db.get(b"batched-2")) == (b"4", b"5")
    finally:
        db.close()


def test_scan_reads_every_item_once_in_chunks_and_stops_when_the_partition_closes(
        tmp_path: Path) -> None:
    """The rebuild's scan holds no handle between chunks (Faust closes a partition by dropping
    it): it seeks past the last key for each chunk and ends once the partition is gone."""
    from rocksdict import Rdict

    from streams.faust_internals import TablePartitions

    db = Rdict(str(tmp_path / "db"))
    try:
        keys = [f"c-{i:05d}".encode() for i in range(1203)]
        for key in keys:
            db.put(key, b"v" + key)
        db.put(b"__offset__", b"42")
        store = SimpleNamespace(_dbs={0: db}, offset_key=b"__offset__",
                                _db_for_partition=lambda partition: db)
        table = TablePartitions(SimpleNamespace(data=store, name="states"))
        chunks = list(table.scan(0, chunk=500))
        assert [len(c) for c in chunks] == [500, 500, 203]
        assert [k for c in chunks for k, _v in c] == sorted(keys)
        assert all(v == b"v" + k for c in chunks for k, v in c)
        scan = table.scan(0, chunk=500)
        assert len(next(scan)) == 500
        store._dbs.clear()  # Faust revoked the partition
        assert list(scan) == []
        assert list(table.scan(7)) == []  # a partition never opened
    finally:
        db.close()
