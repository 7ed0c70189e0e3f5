"""A Faust app whose consumer hands most messages to the conductor without a per-message wait.

Faust 0.15's consumer delivers every fetched message with
``await self.wait_first(callback(message), self.suspend_flow.wait())``
(``faust/transport/consumer.py``, ``Consumer._drain_messages``). ``mode``'s ``wait_first`` wraps
each of its awaitables plus the service's stopped/crashed events in a task and runs
``asyncio.wait``: four tasks and three cancellations per message, about 80 us of CPU each on the
development machine (``docs/performance.md``), more than the rest of Faust's per-message path.

``wait_first`` exists so that a rebalance (``suspend_flow``) can interrupt a callback that is
blocked. The conductor's callback can only block in four places: flow control (suspended during a
rebalance), the producer buffer being above its high-water mark, the conductor's subscription lock,
and a full channel queue. :meth:`FastConsumer._can_deliver_now` checks all four; when none can
block, the callback runs to completion without suspending and is awaited directly. Otherwise the
message takes Faust's own path. The rest of the loop (read offsets, gaps, commit_every) is
Faust's, line for line.

Delivery guarantee and failure behaviour are Faust's: this changes how a message reaches the
conductor, not when it is acked or committed. ``tests/integration`` run every worker through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode import Service


class FastConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with a direct-call fast path for message delivery."""

    def _can_deliver_now(self, tp: TP) -> bool:
        """True when the conductor's callback for a message of ``tp`` cannot block."""
        app = self.app
        if self.suspend_flow.is_set() or not app.flow_control.is_active():
            return False
        conductor: Any = app.topics
        if conductor._tp_to_callback_lock.locked():
            return False
        buffer = app.producer.buffer
        if buffer.size > buffer.max_messages:
            return False
        return not any(chan.queue.full() for chan in conductor._tp_index.get(tp, ()))

    async def _deliver(self, callback: Callable[[Message], Awaitable[None]],
                       message: Message) -> None:
        if self._can_deliver_now(message.tp):
            await callback(message)
        else:
            await self.wait_first(callback(message), self.suspend_flow.wait())

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover (a worker runs it)
        # Faust 0.15.3's loop, with ``_deliver`` in place of the per-message ``wait_first``.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        deliver = self._deliver
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            await deliver(callback, message)
                            set_read_offset(tp, offset)
                    unset_flag(flag_consumer_fetching)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class FastTransport(faust_aiokafka.Transport):
    Consumer = FastConsumer


class CxApp(faust.App):
    """``faust.App`` whose consumer is :class:`FastConsumer` (producers are Faust's own)."""

    def _new_transport(self) -> Any:
        return FastTransport(self.conf.broker_consumer, self)
