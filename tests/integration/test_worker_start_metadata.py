"""A worker starts although the broker lists a changelog topic it just created a moment late.

Faust creates the table changelog topics just before it subscribes, and a busy broker lists a
new topic some time after creating it (seen: 0.3 s). A first assignment computed in between
lacked the identity changelog; Faust's assignor then failed with ``KeyError`` and aiokafka
parked the failure for a ``getmany`` that Faust does not make before it is assigned: the worker
never reported Ready (CI, `make chaos`, `make bench`; streams/faust_internals.py,
``BatchConsumerThread`` and ``BatchPartitionAssignor``). Here the worker runs under
tests/integration/lagging_metadata_worker.py, which hides the identity changelog from every
metadata response of its first 4 seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.integration.conftest import Stack, WorkerProcess, _cli
from tests.integration.services import REPO, free_port, wait_until

HIDE_S = 4.0
READY_WITHIN_S = 60.0


def _start(stack: Stack, **env: str) -> WorkerProcess:
    full_env = stack.env()
    done = _cli("topics", "create", env=full_env)
    assert done.returncode == 0, done.stderr
    log_path = stack.tmp / f"lagging-worker-{len(env)}.log"
    metrics_port = free_port()
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.lagging_metadata_worker", "worker",
             "--loglevel", "info"],
            env={**os.environ, **full_env, "CX_METRICS_PORT": str(metrics_port),
                 "CX_TEST_HIDE_S": str(HIDE_S), **env},
            stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO,
        )
    return WorkerProcess(proc=proc, log_path=log_path, metrics_port=metrics_port)


def _ready(worker: WorkerProcess) -> bool:
    if worker.proc.poll() is not None:
        raise AssertionError(f"the worker exited with {worker.proc.returncode}:\n{worker.log()}")
    return "Ready" in worker.log()


def test_the_worker_waits_for_its_topics_metadata_before_it_subscribes(stack: Stack) -> None:
    worker = _start(stack)
    try:
        started = time.monotonic()
        wait_until(lambda: _ready(worker), READY_WITHIN_S, "the worker to report Ready")
        log = worker.log()
        assert "test: hiding" in log  # the lag was there
        assert time.monotonic() - started >= HIDE_S - 1  # and was waited for
        # Subscribed once the topic was listed: the one assignment had every topic.
        assert "Ignoring missing topic" not in log
        assert "generation id 1 " in log
    finally:
        worker.stop()


def test_an_assignment_without_the_identity_changelog_is_mended_by_a_rejoin(
        stack: Stack) -> None:
    worker = _start(stack, CX_TEST_NO_SUBSCRIBE_WAIT="1")
    try:
        wait_until(lambda: _ready(worker), READY_WITHIN_S, "the worker to report Ready")
        assert "Ignoring missing topic" in worker.log()  # the first assignment lacked it
        # The metadata refresh (every 10 s) sees the topic and the group rejoins: the identity
        # changelog's partitions are then assigned (Faust opens the table's partitions).
        wait_until(lambda: "generation id 2 " in worker.log(), 30,
                   "the worker to rejoin once the topic is listed")
        wait_until(lambda: "Recovery complete" in worker.log().split(
            "generation id 2 ", 1)[-1], 30, "the recovery after the rejoin")
    finally:
        worker.stop()


def test_a_failed_first_assignment_does_not_hang_the_start(stack: Stack) -> None:
    """aiokafka hands a failed assignment to the next ``getmany`` and waits for it; Faust makes
    none before it is assigned. The consumer thread takes such an error after 5 s itself."""
    worker = _start(stack, CX_TEST_HIDE_S="0", CX_TEST_ASSIGNOR_FAILS_ONCE="1")
    try:
        wait_until(lambda: _ready(worker), READY_WITHIN_S, "the worker to report Ready")
        log = worker.log()
        assert "the group coordinator failed (KafkaError" in log
        assert "test: the first assignment fails" in log
    finally:
        worker.stop()
