"""The one door to Faust and aiokafka internals: everything private the worker relies on.

Faust keeps what it is good at (partition assignment, table recovery from the changelog,
standbys, offset commits); the scoring path does not iterate Faust streams. This module

* hands **whole fetches** of the batch topics (touchpoints and the keyed topic) to one batch
  handler, straight from aiokafka's records (:class:`BatchConsumer`); every other topic (table
  changelogs during recovery, standbys, the global identity table) keeps Faust's own path;
* lets the handler **ack a range of offsets** per partition after its outputs are durable
  (:meth:`BatchConsumer.ack_range`), so Faust's commit loop commits exactly what was processed;
* makes a revocation **wait for the batch in flight** and commit its offsets before the
  partitions move (:meth:`BatchConsumer.on_partitions_revoked`): the new owner resumes where this
  worker stopped, and no message is skipped (Faust's stream path acks the messages it skips
  during a rebalance; ours never acks what it did not process);
* mends the holes Faust's flow control cuts into the table changelogs' record stream
  (:class:`ChangelogHoles`): each ``flow_control.resume()`` empties the changelog queue, and
  records fetched but not yet stored are gone while the fetch position has moved past them;
* reads and writes a table's RocksDB partition and its changelog directly
  (:class:`TablePartitions`), as ``Table.__setitem__`` would but without a current event;
* hands records to aiokafka's accumulator as whole batches (:class:`BatchSender`); the
  producer keeps every topic it sends to in the metadata aiokafka refreshes
  (:func:`track_topics_sent_to`);
* stops gracefully (:meth:`BatchApp._stop_consumer` -> :meth:`BatchConsumer.finish_batches`):
  on SIGTERM/SIGINT no further fetch is handed over, the open batch finishes and is made
  durable, and exactly its offsets are committed before Faust stops the fetcher and leaves the
  group;
* subscribes only once the broker's metadata lists every topic (:class:`BatchConsumerThread`),
  and assigns a global table whose changelog is not listed yet to nobody instead of failing
  the assignment (:class:`BatchPartitionAssignor`): a worker never hangs at start-up on a
  changelog topic the broker lists late; a group-coordinator error that aiokafka parks for a
  ``getmany`` nobody makes is taken after 5 s and the group joined again;
* backs off aiokafka's failed metadata updates (:func:`back_off_metadata_updates`), which
  otherwise spin while the broker is down, and probes the broker (:func:`probe_broker`,
  :func:`wait_for_broker`) for start-up and /healthz.

Everything here is checked against exact versions at start-up (:func:`check_versions`): an
upgrade of faust-streaming or aiokafka is one file to read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NamedTuple, Protocol, cast

import faust
from faust.assignor import PartitionAssignor
from faust.exceptions import NotReady
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode import Service
from rocksdict import WriteBatch

from streams.kafka_security import PLAINTEXT, KafkaSecurity
from streams.partitioner import partition_for

log = logging.getLogger(__name__)

PINNED_VERSIONS: dict[str, str] = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


class UnsupportedVersion(RuntimeError):
    pass


def check_versions(installed: Callable[[str], str] = version) -> None:
    """Refuse to start on any Faust or aiokafka version but the pinned ones: this module relies
    on their internals, which change between releases without notice."""
    wrong = []
    for package, pinned in PINNED_VERSIONS.items():
        try:
            found = installed(package)
        except PackageNotFoundError:
            found = "not installed"
        if found != pinned:
            wrong.append(f"{package} {found} (needs {pinned})")
    if wrong:
        raise UnsupportedVersion(
            "CX Signals' worker relies on internals of exactly faust-streaming "
            f"{PINNED_VERSIONS['faust-streaming']} and aiokafka {PINNED_VERSIONS['aiokafka']}; "
            f"found {', '.join(wrong)}. Reinstall with `pip install -e .` (pyproject.toml pins "
            "them) or review streams/faust_internals.py before changing the pins."
        )


BROKER_WAIT_FIRST_S = 1.0
BROKER_WAIT_MAX_S = 10.0


async def probe_broker(bootstrap_servers: str, timeout_s: float = 5.0,
                       security: KafkaSecurity = PLAINTEXT) -> str | None:
    """One metadata request to the cluster (aiokafka's own bootstrap, authenticated as
    ``security`` says): None when a broker answered, else the reason (exception type and text;
    neither the servers list nor aiokafka's messages hold the password)."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers,
                            request_timeout_ms=int(timeout_s * 1000),
                            **security.aiokafka_options())
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s + 1)
        return None
    except Exception as exc:  # any failure is a reason to report, never to crash
        # aiokafka's bootstrap only says "Unable to bootstrap": ask one broker why.
        return await connection_problem(bootstrap_servers, security, timeout_s) or _text(exc)
    finally:
        await client.close()


def _text(exc: BaseException) -> str:
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


async def connection_problem(bootstrap_servers: str, security: KafkaSecurity,
                             timeout_s: float = 5.0) -> str | None:
    """Why a client configured with ``security`` cannot talk to the cluster, in words an operator
    can act on: wrong password, plaintext client on a TLS port, TLS handshake or untrusted
    certificate. None when a broker accepts the connection, or when none answers at all (the
    client's own error, e.g. connection refused, already says that).

    aiokafka's ``create_conn`` (what its bootstrap does per host, internals of 0.14) raises the
    real cause, which ``AIOKafkaClient.bootstrap`` and kafka-python only log. No message holds the
    password: the broker's and the ssl module's texts never contain it."""
    import ssl

    from aiokafka.conn import create_conn
    from aiokafka.errors import SaslAuthenticationFailed

    for host_port in (part.strip() for part in bootstrap_servers.split(",")):
        if not host_port:
            continue
        host, _, port = host_port.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host or host_port, int(port or 9092),
                            request_timeout_ms=int(timeout_s * 1000),
                            **security.aiokafka_options()),
                timeout_s + 1)
        except SaslAuthenticationFailed as exc:
            return (f"authentication failed: Kafka at {host_port} refused the "
                    f"{security.sasl_mechanism} credentials of user {security.sasl_username!r} "
                    f"(check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD[_FILE]; broker said: "
                    f"{exc})")
        except ssl.SSLCertVerificationError as exc:
            return (f"TLS: the certificate of Kafka at {host_port} is not trusted "
                    f"({exc.verify_message}); KAFKA_SSL_CAFILE must name the CA that signed it")
        except ssl.SSLError as exc:
            return (f"TLS handshake with Kafka at {host_port} failed ({exc.reason or exc}): does "
                    f"KAFKA_SECURITY_PROTOCOL={security.protocol} match this listener?")
        except Exception as exc:  # the next host may answer
            if "closed" in str(exc) and not security.uses_ssl:
                return (f"Kafka at {host_port} closed the connection during the "
                        f"{security.protocol} handshake: this listener probably expects TLS "
                        f"and SASL (set KAFKA_SECURITY_PROTOCOL=SASL_SSL, see docs/security.md)")
            continue
        conn.close()
        return None
    return None


def connection_problem_now(bootstrap_servers: str, security: KafkaSecurity,
                           timeout_s: float = 5.0) -> str | None:
    """:func:`connection_problem` for synchronous callers (kafka-python commands)."""
    return asyncio.run(connection_problem(bootstrap_servers, security, timeout_s))


async def wait_for_broker(bootstrap_servers: str,
                          on_wait: Callable[[str, int, float], None],
                          first_s: float = BROKER_WAIT_FIRST_S,
                          max_s: float = BROKER_WAIT_MAX_S,
                          security: KafkaSecurity = PLAINTEXT) -> None:
    """Return once the broker answers a metadata request; until then call
    ``on_wait(reason, attempt, retry_in_s)`` after each failed attempt and wait, backed off
    exponentially from ``first_s`` to ``max_s``. Never gives up (cancel it to stop)."""
    delay_s = first_s
    attempt = 0
    while True:
        attempt += 1
        reason = await probe_broker(bootstrap_servers, security=security)
        if reason is None:
            return
        on_wait(reason, attempt, delay_s)
        await asyncio.sleep(delay_s)
        delay_s = min(max_s, delay_s * 2)


# Records per topic partition: aiokafka's ConsumerRecords (topic, partition, offset, timestamp in
# ms, key, value, headers).
Fetch = Mapping[TP, Sequence[Any]]
BatchHandler = Callable[[Fetch], Awaitable[Any]]


class ChangelogHoles:
    """Table changelog records that Faust's flow control threw away before they were stored.

    Faust hands every table changelog record (recovery, standby copies, the global identity
    table) to a queue that one task drains into the table (``Recovery._slurp_changelogs``,
    which keeps a record only if its offset is above the last one it kept for that partition).
    That queue is cleared on every ``flow_control.resume()`` and ``flow_control.clear()``:
    several times per rebalance, among them once after the standby partitions were resumed
    (``Recovery.on_recovery_completed``), with nothing sought afterwards. Records in the queue
    at that moment are lost while the fetch position is past them, and the next record kept
    moves the table's offset past them too: a hole in a standby copy (found by
    ``test_rebalance``: a promoted copy without a customer's first state, which its later
    events then replaced) or in the identity links.

    :meth:`discarded` notes the lowest thrown-away offset per partition (installed in the
    queue's ``clear`` by :func:`guard_changelog_queue`); the fetch loop then mends each hole
    (:meth:`BatchConsumer._mend_changelog_holes`): it drops the partition's records still in
    the queue, lowers the table's last-kept offset below the hole and seeks back to it, so the
    records from the hole on are read and stored again, in order (storing a record twice is
    harmless: the last one per key wins)."""

    def __init__(self) -> None:
        self.first: dict[TP, int] = {}

    def discarded(self, events: Sequence[Any]) -> None:
        first = self.first
        for event in events:
            message = event.message
            tp, offset = message.tp, message.offset
            if offset < first.get(tp, offset + 1):
                first[tp] = offset

    @staticmethod
    def target(hole: int, position: int | None, queued: Sequence[int]) -> int:
        """Where to read the partition again: the hole, or earlier if the position or a record
        still queued is earlier (never forward over unread records)."""
        return min(hole, *queued, *(() if position is None else (position,)))


def guard_changelog_queue(app: faust.App, holes: ChangelogHoles) -> None:
    """Have the table changelog queue report what each clear throws away to ``holes``."""
    queue: Any = cast(Any, app.tables).changelog_queue
    clear = queue.clear

    def clear_noting_holes() -> None:
        pending = list(queue._queue)  # asyncio.Queue's deque
        if pending:
            holes.discarded(pending)
            log.info("Faust's flow control dropped %d table changelog records not stored yet: "
                     "they are read again", len(pending))
        clear()

    queue.clear = clear_noting_holes


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose fetcher hands the batch topics' records to a handler,
    one whole fetch at a time, instead of one message at a time through the conductor."""

    batch_topics: frozenset[str] = frozenset()
    batch_handler: BatchHandler | None = None
    # Waits until every fetch handed to batch_handler is durable and acked.
    batch_drain: Callable[[], Awaitable[None]] | None = None
    fetch_timeout_s: float = 1.0
    # The broker answers a fetch once it holds this many bytes for us or after this long
    # (aiokafka's fetch_min_bytes / fetch_max_wait_ms; Faust passes 1 byte / 1,500 ms). Under a
    # steady trickle a 1-byte minimum hands over a fetch every few events, and each fetch has a
    # fixed cost (a scoring pass, a durable phase, produce requests): waiting a few ms for more
    # makes fewer, larger fetches. A backlog fills the minimum at once.
    fetch_min_bytes: int = 1
    fetch_max_wait_ms: int = 1500

    # A graceful stop waits this long for the open batch's outputs and states to be durable,
    # then this long for the offset commit; what is not committed is redelivered.
    stop_drain_timeout_s: float = 4.0
    stop_commit_timeout_s: float = 2.0

    def __post_init__(self) -> None:  # mode.Service hook, after __init__
        super().__post_init__()
        self.batch_lock = asyncio.Lock()
        self._next_ack: dict[TP, int] = {}
        self._finishing = False
        self.changelog_holes = ChangelogHoles()
        self._seek_epoch = 0  # counts seeks, Faust's included (see _mend_changelog_holes)

    async def finish_batches(self) -> bool:
        """Graceful stop, before Faust stops the fetcher: hand no further fetch to the
        handler, let the one in flight finish, make every handled fetch durable (outputs,
        states, acks) and commit exactly those offsets. Returns True when all of it was
        committed; on a timeout (broker unreachable) the rest is simply not committed and the
        next owner processes it again (at least once)."""
        self._finishing = True
        started_s = time.monotonic()
        async with self.batch_lock:
            try:
                if self.batch_drain is not None:
                    await asyncio.wait_for(self.batch_drain(), self.stop_drain_timeout_s)
                await asyncio.wait_for(self.commit(), self.stop_commit_timeout_s)
            except asyncio.TimeoutError:
                log.warning("stop: the open batch was not durable and committed within %.0f s; "
                            "its offsets are not committed and will be processed again",
                            self.stop_drain_timeout_s + self.stop_commit_timeout_s)
                return False
            except Exception as exc:
                log.warning("stop: commit failed (%s: %s); uncommitted offsets will be "
                            "processed again", type(exc).__name__, exc)
                return False
        log.info("stop: open batch flushed and offsets committed in %.2f s",
                 time.monotonic() - started_s)
        return True

    def _new_consumer_thread(self) -> Any:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def ack_range(self, tp: TP, first: int, last: int) -> None:
        """Mark offsets ``first..last`` of ``tp`` (and any gap since the previous range, e.g.
        transaction markers) processed: Faust's commit loop commits them."""
        committed = self._committed_offset[tp]
        start = self._next_ack.get(tp, first if committed is None else committed)
        if committed is not None:
            start = max(start, committed)
        if last < start:
            return
        offsets = range(start, last + 1)
        self._acked[tp].extend(offsets)
        self._acked_index[tp].update(offsets)
        self._n_acked += len(offsets)
        self._next_ack[tp] = last + 1

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        async with self.batch_lock:  # the batches in flight finish and ack first
            try:
                if self.batch_drain is not None:
                    await self.batch_drain()
                await self.commit()
            except Exception as exc:  # the new owner re-reads from the last commit
                log.warning("commit before revocation failed (%s: %s)", type(exc).__name__, exc)
            for tp in revoked:
                self._next_ack.pop(tp, None)
            await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._next_ack.clear()  # Faust seeks every assigned partition to its committed offset
        await super().on_partitions_assigned(assigned, generation_id)

    async def seek(self, partition: TP, offset: int) -> None:
        self._seek_epoch += 1
        await super().seek(partition, offset)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        self._seek_epoch += 1
        await super().seek_wait(partitions)

    async def perform_seek(self) -> None:
        self._seek_epoch += 1
        await super().perform_seek()

    async def _mend_changelog_holes(self) -> None:
        """Read again, from the hole on, each table changelog partition whose records Faust's
        flow control threw away (:class:`ChangelogHoles`). Runs between fetches while the flow
        is active; a partition no longer assigned is left to its next owner, and one sought by
        someone else while its position was looked up is looked at again after the next fetch.
        """
        first = self.changelog_holes.first
        if not first or not self.flow_active:
            return
        tables: Any = self.app.tables
        recovery, queue = tables.recovery, tables.changelog_queue
        for tp, hole in list(first.items()):
            epoch = self._seek_epoch
            try:
                if tp not in self.assignment():
                    del first[tp]
                    continue
                position = await self.position(tp)
            except Exception as exc:  # revoked meanwhile: its next owner reads it
                first.pop(tp, None)
                log.info("changelog %s[%d]: hole at %d not mended (%s: %s)", tp.topic,
                         tp.partition, hole, type(exc).__name__, exc)
                continue
            if self._seek_epoch != epoch:
                continue  # sought meanwhile: look again after the next fetch
            # From here to the seek nothing yields to the event loop.
            del first[tp]
            pending = queue._queue  # the asyncio.Queue's deque
            queued = [e.message.offset for e in pending if e.message.tp == tp]
            target = ChangelogHoles.target(hole, position, queued)
            if queued:
                kept = [e for e in pending if e.message.tp != tp]
                pending.clear()
                pending.extend(kept)
            for offsets in (recovery.active_offsets, recovery.standby_offsets):
                if tp in offsets and (offsets[tp] is None or offsets[tp] >= target):
                    offsets[tp] = target - 1
            if position != target:
                await self.seek(tp, target)
            log.info("changelog %s[%d]: records from offset %d read again (dropped by Faust's "
                     "flow control at %d; position was %s)", tp.topic, tp.partition, target,
                     hole, position)

    def _split(self, records: Mapping[TP, Sequence[Any]], active: set[TP] | None
               ) -> tuple[dict[TP, Sequence[Any]], list[tuple[TP, Any]], dict[TP, Sequence[Any]]]:
        """The batch topics' records (for the handler), the other topics' (for Faust's
        callback), and the records of partitions no longer active (paused since the fetch),
        which nobody will see."""
        ours: dict[TP, Sequence[Any]] = {}
        others: list[tuple[TP, Any]] = []
        left_out: dict[TP, Sequence[Any]] = {}
        batch_topics = self.batch_topics
        for tp, recs in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                if recs:
                    left_out[tp] = recs
                continue
            if tp.topic in batch_topics:
                ours[tp] = recs
            else:
                others.extend((tp, rec) for rec in recs)
        return ours, others, left_out

    def skipped_ranges(self, left_out: Mapping[TP, Sequence[Any]]
                       ) -> dict[TP, tuple[int, int]]:
        """First and last offset of the left-out records (:meth:`_split`) of each partition
        that is still assigned: source partitions and table changelogs alike."""
        if not left_out:
            return {}
        assigned = set(self.assignment())
        return {tp: (recs[0].offset, recs[-1].offset) for tp, recs in left_out.items()
                if tp in assigned}

    async def _seek_back_skipped(self, left_out: Mapping[TP, Sequence[Any]]) -> None:
        """The fetch position moved past records nobody processed: go back to them.

        Else, for a source partition, the next fetch would be acked from the previous range's
        end (:meth:`ack_range` closes gaps) and they would be committed unprocessed; for a
        standby changelog partition (paused by Faust between the fetch and the split when a
        worker joins: hundreds of records from offset 0 at a join), the standby copy
        would miss them while its persisted offset moves past them, and a promotion would
        score from incomplete states (``test_rebalance``). A partition whose position is no
        longer just past the fetched records was sought since (Faust's recovery or a seek to
        the committed offsets) and is left where that put it."""
        for tp, (first, last) in self.skipped_ranges(left_out).items():
            try:
                position = await self.position(tp)
                if position is not None and position != last + 1:
                    log.info("fetched records of paused %s[%d] from offset %d: left out, the "
                             "partition was sought to %d since", tp.topic, tp.partition, first,
                             position)
                    continue
                log.info("fetched records of paused %s[%d] from offset %d: seeking back to "
                         "them", tp.topic, tp.partition, first)
                await self.seek(tp, first)
            except Exception as exc:  # revoked meanwhile: its next owner starts from its own
                log.info("fetched records of paused %s[%d] from offset %d: not sought back "
                         "(%s: %s)", tp.topic, tp.partition, first, type(exc).__name__, exc)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover (a worker runs it)
        """Faust 0.15.3's fetch loop (``Consumer._drain_messages`` + ``getmany``), with the batch
        topics' records handed to :attr:`batch_handler` per fetch."""
        callback = self.callback
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        handler = self.batch_handler
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                await self._mend_changelog_holes()
                records, active = await self._wait_next_records(self.fetch_timeout_s)
                await asyncio.sleep(0)
                if self.should_stop:
                    break
                if records is None:
                    continue
                if not self.flow_active:
                    # Fetched while a rebalance stopped the flow: nothing of it was processed,
                    # so go back to the committed offsets (as Faust's getmany does).
                    await self.perform_seek()
                    continue
                generation = self.app.consumer_generation_id
                ours, others, left_out = self._split(records, active)
                await self._seek_back_skipped(left_out)
                for tp, rec in others:
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break
                    await self.wait_first(callback(self._to_message(tp, rec)),
                                          self.suspend_flow.wait())
                if self._finishing:
                    break  # a graceful stop: this fetch is not processed, nor acked
                if handler is not None:
                    async with self.batch_lock:
                        # A revocation that ran since the fetch moved the partitions: their
                        # records belong to the new owner (Faust seeks on assignment).
                        if (self.flow_active and not self._finishing
                                and self.app.consumer_generation_id == generation):
                            assigned = self.assignment()
                            ours = {tp: recs for tp, recs in ours.items() if tp in assigned}
                            await handler(ours)
                            # Faust's stall detector reads when a stream last took a message.
                            inbound = self.app.monitor.stream_inbound_time
                            now_s = time.monotonic()
                            for tp in ours:
                                inbound[tp] = now_s
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


METADATA_BACKOFF_FIRST_S = 0.25
METADATA_BACKOFF_MAX_S = 2.0


def back_off_metadata_updates(client: Any, first_s: float = METADATA_BACKOFF_FIRST_S,
                              max_s: float = METADATA_BACKOFF_MAX_S) -> None:
    """Make an ``AIOKafkaClient`` wait after a failed metadata update, ``first_s`` doubling to
    ``max_s``, back to ``first_s`` after a success.

    aiokafka 0.14 retries without any pause while no broker answers: the producer's sender waits
    only for the next metadata update when a leader is unknown, and a refused connection fails
    that update at once (and forces the next one). With the broker down that is a busy loop
    (measured: 14,902 "Unable connect" / "Unable to update metadata" lines and 11.5 CPU-s while
    the broker was away 22 s). Every waiter of the update (sender, fetcher, coordinator)
    now waits for the backoff instead; a broker that comes back is seen within ``max_s``."""
    update = client._metadata_update
    delay_s = first_s

    async def backed_off(cluster_metadata: Any, topics: Any) -> Any:
        nonlocal delay_s
        ok = await update(cluster_metadata, topics)
        if ok:
            delay_s = first_s
        else:
            await asyncio.sleep(delay_s)
            delay_s = min(max_s, delay_s * 2)
        return ok

    client._metadata_update = backed_off


# How often the worker's consumer refreshes its metadata when nothing forces it (aiokafka's
# default: 5 minutes). See BatchConsumerThread.
CONSUMER_METADATA_MAX_AGE_MS = 10_000


# How long a subscription waits for the broker's metadata to list every topic subscribed to
# (Faust creates the changelog topics just before it subscribes). See BatchConsumerThread.
SUBSCRIBE_METADATA_WAIT_S = 60.0
SUBSCRIBE_METADATA_LOG_EVERY_S = 10.0
SUBSCRIBE_METADATA_POLL_S = 0.1
# A group coordinator error that nothing has taken for this long is taken by the consumer
# thread itself (see BatchConsumerThread._take_parked_coordinator_error).
PARKED_ERROR_CHECK_S = 1.0
PARKED_ERROR_TAKE_AFTER_S = 5.0


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread whose aiokafka client backs off failed metadata updates,
    refreshes its metadata every ``CONSUMER_METADATA_MAX_AGE_MS``, and subscribes only once
    its metadata lists every topic of the subscription (:meth:`subscribe`).

    Why: Faust creates the changelog topics just before it subscribes, and a broker lists a
    topic it has just created a moment later (seen: 0.3 s on a busy machine). A first
    assignment computed in between lacked the identity changelog, and Faust's assignor then
    failed with ``KeyError`` (``PartitionAssignor._global_table_standby_assignments`` indexes
    every global table's changelog). aiokafka hands a failed assignment to the consumer's next
    ``getmany`` and waits for it there, while Faust fetches nothing before it is assigned: the
    worker never rejoined and never reported Ready (CI and `make chaos` on 2026-12-05, a
    `make bench` latency phase on 2026-12-06; reproduced by hiding the topic from the first
    metadata responses). :class:`BatchPartitionAssignor` no longer fails on a missing topic,
    and the refresh every 10 s (aiokafka's default: 5 minutes) notices the topic and rejoins."""

    _parked: tuple[BaseException, float] | None = None

    @Service.timer(PARKED_ERROR_CHECK_S)
    async def _take_parked_coordinator_error(self) -> None:
        """Take a group coordinator error that waited ``PARKED_ERROR_TAKE_AFTER_S`` for a
        ``getmany`` to take it, log it and let the coordinator go on (it joins the group again).

        aiokafka 0.14 hands an error of its coordinator (a failed join or assignment, e.g. an
        exception in the assignor) to the consumer's next ``getmany`` and waits until that call
        takes it: no heartbeat, no rejoin meanwhile. Faust makes no ``getmany`` before it is
        assigned, so such an error at start-up (or during a rebalance) hung the worker for ever
        (see :class:`BatchPartitionAssignor` for the one seen). When Faust is fetching, its own
        ``getmany`` takes the error long before this does."""
        coordinator: Any = getattr(getattr(self, "_consumer", None), "_coordinator", None)
        error = getattr(coordinator, "_pending_exception", None)
        if coordinator is None or error is None:
            self._parked = None
            return
        now = time.monotonic()
        if self._parked is None or self._parked[0] is not error:
            self._parked = (error, now)
            return
        waited_s = now - self._parked[1]
        if waited_s < PARKED_ERROR_TAKE_AFTER_S:
            return
        self._parked = None
        # What GroupCoordinator.check_errors does with a pending error, without raising it.
        coordinator._pending_exception = None
        consumed = coordinator._error_consumed_fut
        coordinator._error_consumed_fut = None
        if consumed is not None and not consumed.done():
            consumed.set_result(None)
        log.warning("the group coordinator failed (%s: %s) and no fetch took the error for "
                    "%.0f s (none is made before partitions are assigned): taken here, the "
                    "group is joined again", type(error).__name__, error, waited_s)

    async def subscribe(self, topics: Any) -> None:
        """Wait until the consumer's metadata lists every topic of ``topics`` (at most
        ``SUBSCRIBE_METADATA_WAIT_S``; a log line every ``SUBSCRIBE_METADATA_LOG_EVERY_S``
        names the missing ones), then subscribe as Faust does."""
        wanted = set(topics)
        await self.call_thread(self._await_topic_metadata, wanted)
        await super().subscribe(wanted)

    async def _await_topic_metadata(self, topics: set[str]) -> None:
        client = self._ensure_consumer()._client
        started = logged = time.monotonic()
        while True:
            missing = sorted(t for t in topics if not client.cluster.partitions_for_topic(t))
            if not missing:
                return
            now = time.monotonic()
            if now - started >= SUBSCRIBE_METADATA_WAIT_S:
                log.warning("subscribing although the broker's metadata still lacks %s after "
                            "%.0f s; the group rejoins when it lists them",
                            ", ".join(missing), now - started)
                return
            if now - logged >= SUBSCRIBE_METADATA_LOG_EVERY_S:
                logged = now
                log.info("waiting %.0f s so far for the broker's metadata to list %s",
                         now - started, ", ".join(missing))
            for topic in missing:
                # Tracked from now on: each metadata update asks for it.
                client._topics.add(topic)
            await client.force_metadata_update()
            await asyncio.sleep(SUBSCRIBE_METADATA_POLL_S)

    def _create_consumer(self, loop: asyncio.AbstractEventLoop) -> Any:
        consumer = super()._create_consumer(loop)
        back_off_metadata_updates(consumer._client)
        consumer._client._metadata_max_age_ms = CONSUMER_METADATA_MAX_AGE_MS
        # Read when the consumer starts its fetcher (aiokafka 0.14: AIOKafkaConsumer.start).
        owner = self.consumer
        if isinstance(owner, BatchConsumer):
            consumer._fetch_min_bytes = owner.fetch_min_bytes
            consumer._fetch_max_wait_ms = owner.fetch_max_wait_ms
        return consumer


def track_topics_sent_to(client: Any) -> None:
    """Make an ``AIOKafkaClient`` keep every topic it is asked to send to in the metadata it
    refreshes (``client._topics``).

    aiokafka 0.14 refreshes metadata for the topics in ``_topics`` only (every topic while that
    set is empty), and ``_wait_on_metadata``, which every ``send`` and ``send_batch`` awaits,
    adds a topic to it only when the topic is missing from the metadata at hand: a topic first
    sent to while the metadata listed every topic is never added. The next update for the
    tracked topics then drops it; a batch of it waiting in the accumulator has no leader any
    more, the sender forces metadata updates that never bring it back (a busy loop) and the
    batch waits until Faust's producer request timeout (1,200 s), the pipeline with it (seen
    once: a changelog batch unacknowledged for 270 s at the start of a bench run). Now the
    first send to a topic adds it (one forced metadata update); later sends pay a set look-up.
    """
    wait_on_metadata = client._wait_on_metadata

    async def tracked(topic: str) -> Any:
        if topic not in client._topics:  # set_topics replaces the set: read it each time
            await client.add_topic(topic)
        return await wait_on_metadata(topic)

    client._wait_on_metadata = tracked


class BatchProducer(faust_aiokafka.Producer):
    """Faust's producer whose aiokafka client backs off failed metadata updates and keeps every
    topic it sends to in its metadata (:func:`track_topics_sent_to`).

    It also runs a second aiokafka producer with the same settings, for the state changelog
    only (:meth:`ensure_state_producer`; started and stopped with this one). aiokafka keeps one
    produce request in flight per broker: with one producer, a checkpoint slice (up to 1,000
    states, megabytes) held every alert and score update behind it until the broker had
    written it. With its own connection, outputs and states are in flight side by side; the
    pipeline still sends a phase's states only once its outputs are acknowledged."""

    _state_producer: Any = None

    def _new_producer(self, transactional_id: str | None = None) -> Any:
        producer = super()._new_producer(transactional_id)
        back_off_metadata_updates(producer.client)
        track_topics_sent_to(producer.client)
        return producer

    async def on_start(self) -> None:
        await super().on_start()
        producer = self._state_producer = self._new_producer()
        await producer.start()

    async def on_stop(self) -> None:
        producer, self._state_producer = self._state_producer, None
        if producer is not None:
            await producer.stop()
        await super().on_stop()

    async def flush(self) -> None:
        await super().flush()
        if self._state_producer is not None:
            await self._state_producer.flush()

    def ensure_state_producer(self) -> Any:
        """The started changelog producer (``NotReady`` before the service started)."""
        if self._state_producer is None:
            raise NotReady("state producer not yet started")
        return self._state_producer


class BatchPartitionAssignor(PartitionAssignor):
    """Faust's assignor, which assigns a global table whose changelog the cluster metadata does
    not list yet to nobody instead of failing the whole assignment with ``KeyError`` (Faust
    0.15.3 indexes the metadata by every global changelog topic). The consumer's metadata
    refresh then sees the topic appear and the group rejoins (see
    :class:`BatchConsumerThread`)."""

    def _global_table_standby_assignments(
        self, assignments: Any, partitions_by_topic: Mapping[str, int]
    ) -> Any:
        missing = [topic for table in self._table_manager.data.values() if table.is_global
                   and (topic := table._changelog_topic_name()) not in partitions_by_topic]
        if not missing:
            return super()._global_table_standby_assignments(assignments, partitions_by_topic)
        log.warning("global table changelog(s) %s not in the cluster metadata yet: assigned "
                    "once the broker lists them (the group then rejoins)", ", ".join(missing))
        # Zero partitions: Faust assigns each member an empty list for the topic; dropped here.
        assignments = super()._global_table_standby_assignments(
            assignments, {**partitions_by_topic, **dict.fromkeys(missing, 0)})
        for assignment in assignments.values():
            for topic in missing:
                assignment.actives.pop(topic, None)
                assignment.standbys.pop(topic, None)
        return assignments


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer
    Producer = BatchProducer


class BatchApp(faust.App):
    """``faust.App`` whose consumer is :class:`BatchConsumer` and whose assignor is
    :class:`BatchPartitionAssignor` (producers are Faust's own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("PartitionAssignor", BatchPartitionAssignor)
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)

    async def _stop_consumer(self) -> None:
        """Faust's stop (pause, stop the fetcher, wait for streams, stop tables), preceded by
        :meth:`BatchConsumer.finish_batches`: Faust would otherwise cancel the fetch loop in the
        middle of a batch and commit before its acks."""
        consumer = self._consumer
        if isinstance(consumer, BatchConsumer):
            try:
                consumer.assignment()
            except Exception:  # never started (e.g. the broker went away at start-up)
                pass
            else:
                await consumer.finish_batches()
        await super()._stop_consumer()


def batch_consumer(app: faust.App) -> BatchConsumer:
    return cast(BatchConsumer, app.consumer)


def subscribe(app: faust.App, topic: faust.TopicT) -> None:
    """Have the consumer subscribe to ``topic`` without an agent iterating it (and declare it
    at start-up if it is internal)."""
    app.topics.add(topic)


class ChangelogRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] | None
    partition: int | None


class TablePartitions:
    """A Faust table's RocksDB partitions and changelog, written the way ``Table.__setitem__``
    writes them (a put into the partition's store, a changelog record with the same key, value
    and partition) but with the partition given, outside stream iteration.

    The changelog offset that recovery starts from is persisted once per partition per batch
    (:meth:`persist_offsets`), after the broker acknowledged the records (:meth:`delivered`).
    Recovery, standbys and assignment stay Faust's. Not for
    ``processing_guarantee="exactly_once"`` (Faust then persists offsets at commit time), which
    CX Signals does not use.

    Writes go through RocksDB's write-ahead log (the handle's default): a write is durable when
    ``put_many`` returns. Skipping it (~4 us a put) was tried and undone: without it
    a write lives in the memtable until a flush, and Faust closes a partition by dropping its
    handle, which closes (and flushes) only when the handle is garbage-collected. (The
    standby loss it was blamed for was a hole in the standby stream, closed in
    :meth:`BatchConsumer._seek_back_skipped`.) One log append per :meth:`put_many`. No
    reference to a handle is kept here either.
    """

    def __init__(self, table: Any) -> None:
        store = table.data
        if not hasattr(store, "_db_for_partition"):
            raise ValueError(
                f"table {table.name} must use the RocksDB store (CX_STORE_URL=rocksdb://), "
                f"not {type(store).__name__}"
            )
        self.table = table
        self.store = store
        self._offsets: dict[int, int] = {}
        self._changelog_topic: str | None = None

    @property
    def changelog_topic(self) -> str:
        if self._changelog_topic is None:
            self._changelog_topic = cast(str, self.table.changelog_topic.get_topic_name())
        return self._changelog_topic

    def get(self, partition: int, key: bytes) -> bytes | None:
        return cast("bytes | None", self.store._db_for_partition(partition).get(key))

    def get_any(self, key: bytes) -> bytes | None:
        """A key from whichever partition holds it (global tables: every partition is local)."""
        for db in list(self.store._dbs.values()):
            value = db.get(key)
            if value is not None:
                return cast(bytes, value)
        return None

    def partitions_of(self, key: bytes) -> list[int]:
        """The local partitions that hold ``key`` (global tables: a key written to several
        partitions over time is in each until a tombstone reaches it)."""
        return [partition for partition, db in list(self.store._dbs.items())
                if db.get(key) is not None]

    def put_many(self, partition: int, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Store every ``(key, value)`` (None: delete the key) in one write batch: one
        write-ahead-log append for all of them (1.4 us a state instead of 2.2-2.7 here), applied
        all or none, and durable when this returns (through the write-ahead log). Faust opens its
        partitions in raw mode, so the batch is raw too."""
        batch = WriteBatch(raw_mode=True)
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.store._db_for_partition(partition).write(batch)

    def changelog_record(self, partition: int, key: bytes,
                         value: bytes | None) -> ChangelogRecord:
        """The changelog record of a write (send it with :class:`BatchSender`); a value of None
        is a tombstone, which recovery and compaction turn into a deletion."""
        return ChangelogRecord(self.changelog_topic, key, value, None, partition)

    def delivered(self, delivery: Delivery) -> None:
        """The broker has ``delivery`` (a changelog batch): remember its last offset."""
        if delivery.topic != self.changelog_topic:
            return
        last = delivery.future.result().offset + len(delivery.indices) - 1
        if last > self._offsets.get(delivery.partition, -1):
            self._offsets[delivery.partition] = last

    def persist_offsets(self) -> None:
        offsets, self._offsets = self._offsets, {}
        topic = self.changelog_topic
        for partition, offset in offsets.items():
            self.store.set_persisted_offset(TP(topic, partition), offset)

    def scan(self, partition: int, chunk: int = 500) -> Iterator[list[tuple[bytes, bytes]]]:
        """The partition's items in chunks (the caller yields to the event loop in between).

        Holds no handle or iterator between chunks: each chunk looks the partition up again and
        seeks past the last key, so a partition Faust closes meanwhile (it drops the handle;
        the close flushes the memtable) is really closed, and the scan ends.
        """
        offset_key = self.store.offset_key
        last: bytes | None = None
        while True:
            db = self.store._dbs.get(partition)
            if db is None:
                return
            items: list[tuple[bytes, bytes]] = []
            iterator = db.items() if last is None else db.items(from_key=last)
            for key, value in iterator:
                if key in (last, offset_key):  # from_key is inclusive
                    continue
                items.append((key, value))
                if len(items) >= chunk:
                    break
            del iterator, db
            if items:
                last = items[-1][0]
                yield items
            if len(items) < chunk:
                return

    def estimated_keys(self, partitions: Sequence[int]) -> int:
        """RocksDB's estimate of the keys in these partitions: O(1), no scan."""
        total = 0
        for partition in partitions:
            db = self.store._dbs.get(partition)
            if db is not None:
                total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
        return total


class OutRecord(Protocol):
    """What :meth:`BatchSender.send` reads of a record (read-only: any record class fits)."""

    @property
    def topic(self) -> str: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | None: ...

    @property
    def partition(self) -> int | None: ...


class Delivery(NamedTuple):
    """One record batch handed to the producer: ``future`` resolves to its RecordMetadata
    (``offset`` is the batch's base offset); ``indices`` are its records' positions in the
    list given to :meth:`BatchSender.send`."""

    future: asyncio.Future[Any]
    topic: str
    partition: int
    indices: list[int]


class BatchSender:
    """Hands records to aiokafka as whole record batches, one per topic partition and call
    (``AIOKafkaProducer.create_batch`` / ``send_batch``, the producer Faust started), instead of
    one ``send`` per record with its future and accumulator lookup. Records of one partition
    keep their order. A record without a partition goes where Kafka's default partitioner puts
    it (murmur2 of the key, the same as ``producer.send``; round robin without a key)."""

    def __init__(self, producer: Callable[[], Any]) -> None:
        """``producer`` returns the started ``AIOKafkaProducer`` (see :meth:`of_app`)."""
        self._producer = producer
        self._round_robin = 0
        # Turns that keep concurrent calls in call order: aiokafka's accumulator does not
        # (a caller waiting for a full partition queue is re-checked after the drain, and a
        # later caller may append first). A call waits for the previous call to reserve its
        # partitions' turns, and each partition's batch for the previous holder of the turn.
        self._call_turn: asyncio.Future[None] | None = None
        self._turns: dict[tuple[str, int], asyncio.Future[None]] = {}

    @classmethod
    def of_app(cls, app: faust.App, *, states: bool = False) -> BatchSender:
        """A sender on the aiokafka producer Faust started for ``app`` (``states``: on its
        second producer, the state changelog's; see :class:`BatchProducer`)."""
        if states:
            return cls(lambda: cast(BatchProducer, app.producer).ensure_state_producer())
        return cls(lambda: cast(Any, app.producer)._ensure_producer())

    async def _partitions(self, producer: Any, topic: str) -> int:
        partitions = producer.client.cluster.partitions_for_topic(topic)
        if not partitions:
            await producer.client._wait_on_metadata(topic)
            partitions = producer.client.cluster.partitions_for_topic(topic)
        return len(partitions)

    async def send(self, records: Sequence[OutRecord]) -> list[Delivery]:
        """Hand ``records`` over; concurrent calls reach each partition in call order."""
        loop = asyncio.get_running_loop()
        previous_call, my_call = self._call_turn, loop.create_future()
        self._call_turn = my_call
        try:
            if previous_call is not None:
                await asyncio.shield(previous_call)
            return await self._send(records, my_call)
        finally:
            if not my_call.done():
                my_call.set_result(None)
            if self._call_turn is my_call:
                self._call_turn = None

    async def _send(self, records: Sequence[OutRecord],
                    my_call: asyncio.Future[None]) -> list[Delivery]:
        producer = self._producer()
        groups: dict[tuple[str, int], list[int]] = {}
        counts: dict[str, int] = {}
        for index, record in enumerate(records):
            partition = record.partition
            if partition is None:
                topic = record.topic
                count = counts.get(topic)
                if count is None:
                    count = counts[topic] = await self._partitions(producer, topic)
                if record.key is None:
                    self._round_robin += 1
                    partition = self._round_robin % count
                else:
                    partition = key_partition(record.key, count)
            group = groups.get((record.topic, partition))
            if group is None:
                groups[(record.topic, partition)] = [index]
            else:
                group.append(index)
        # Every record is appended (and stamped) now; the batches of different partitions are
        # then submitted together: one partition waiting for its previous batch to drain does
        # not hold the others back.
        built: list[tuple[str, int, list[tuple[Any, list[int]]]]] = []
        for (topic, partition), indices in groups.items():
            batches: list[tuple[Any, list[int]]] = []
            batch = producer.create_batch()
            in_batch: list[int] = []
            for index in indices:
                record = records[index]
                headers = list(record.headers) if record.headers else []
                if batch.append(timestamp=None, key=record.key, value=record.value,
                                headers=headers) is None:
                    if not in_batch:
                        raise ValueError(f"a record for {topic} does not fit a record batch")
                    batches.append((batch, in_batch))
                    batch, in_batch = producer.create_batch(), []
                    batch.append(timestamp=None, key=record.key, value=record.value,
                                 headers=headers)
                in_batch.append(index)
            batches.append((batch, in_batch))
            built.append((topic, partition, batches))
        # Reserve every partition's turn now, then let the next call reserve its own.
        loop = asyncio.get_running_loop()
        turns = []
        for topic, partition, _batches in built:
            tp = (topic, partition)
            mine = loop.create_future()
            turns.append((self._turns.get(tp), mine))
            self._turns[tp] = mine
        my_call.set_result(None)
        per_partition = await asyncio.gather(*(
            self._submit_in_order(producer, topic, partition, batches, previous, mine)
            for (topic, partition, batches), (previous, mine) in zip(built, turns, strict=True)))
        return [delivery for deliveries in per_partition for delivery in deliveries]

    async def _submit_in_order(self, producer: Any, topic: str, partition: int,
                               batches: list[tuple[Any, list[int]]],
                               previous: asyncio.Future[None] | None,
                               mine: asyncio.Future[None]) -> list[Delivery]:
        try:
            if previous is not None:
                await asyncio.shield(previous)
            return [await self._submit(producer, batch, topic, partition, indices)
                    for batch, indices in batches]
        finally:
            mine.set_result(None)
            if self._turns.get((topic, partition)) is mine:
                del self._turns[(topic, partition)]

    async def _submit(self, producer: Any, batch: Any, topic: str, partition: int,
                      indices: list[int]) -> Delivery:
        batch.close()
        future = await producer.send_batch(batch, topic, partition=partition)
        return Delivery(future, topic, partition, indices)


@lru_cache(maxsize=1 << 17)
def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partition of a keyed record (murmur2), remembered per key."""
    return partition_for(key, partitions)
