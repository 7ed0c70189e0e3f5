"""``cxsignals`` with a broker whose metadata lags behind topic creation (for the start-up test).

For ``CX_TEST_HIDE_S`` seconds after the process starts, every metadata response the process
reads reports each topic ending in ``-identities-changelog`` as UNKNOWN_TOPIC_OR_PARTITION with no
partitions: what a busy broker answers in the moment between creating a topic and listing it
(seen: 0.3 s). ``CX_TEST_NO_SUBSCRIBE_WAIT=1`` also turns off the worker's wait for its topics'
metadata before it subscribes, so that the assignor meets the missing topic.
``CX_TEST_ASSIGNOR_FAILS_ONCE=1`` makes the worker's assignor raise on its first assignment.

Usage: ``python -m tests.integration.lagging_metadata_worker worker --loglevel info``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import aiokafka.cluster

HIDDEN_SUFFIX = "-identities-changelog"
UNKNOWN_TOPIC_OR_PARTITION = 3


def hide_topics(hide_s: float) -> None:
    started = time.monotonic()
    update = aiokafka.cluster.ClusterMetadata.update_metadata
    log = logging.getLogger("tests.lagging_metadata")

    def lagging(self: Any, metadata: Any) -> Any:
        if time.monotonic() - started < hide_s:
            topics = []
            for entry in metadata.topics:
                name = entry[1]
                if name.endswith(HIDDEN_SUFFIX):
                    # (error, name, [is_internal,] partitions): unknown, no partitions.
                    entry = (UNKNOWN_TOPIC_OR_PARTITION, name, *entry[2:-1], [])
                    log.warning("test: hiding %s from a metadata response", name)
                topics.append(entry)
            metadata.topics = topics
        return update(self, metadata)

    aiokafka.cluster.ClusterMetadata.update_metadata = lagging


def fail_first_assignment() -> None:
    """The worker's assignor raises on its first assignment (a stand-in for any failure the
    group coordinator hands to the consumer's next ``getmany``)."""
    from streams.faust_internals import BatchPartitionAssignor

    assign = BatchPartitionAssignor.assign
    failed = False

    def failing_once(self: Any, cluster: Any, member_metadata: Any) -> Any:
        nonlocal failed
        if not failed:
            failed = True
            raise RuntimeError("test: the first assignment fails")
        return assign(self, cluster, member_metadata)

    BatchPartitionAssignor.assign = failing_once  # type: ignore[method-assign]


def main() -> int:
    hide_topics(float(os.environ.get("CX_TEST_HIDE_S", "4")))
    if os.environ.get("CX_TEST_NO_SUBSCRIBE_WAIT") == "1":
        import streams.faust_internals

        streams.faust_internals.SUBSCRIBE_METADATA_WAIT_S = 0.0
    if os.environ.get("CX_TEST_ASSIGNOR_FAILS_ONCE") == "1":
        fail_first_assignment()
    from cxsignals.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
