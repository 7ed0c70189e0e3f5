"""RetryPolicy: bounded exponential backoff with jitter, in virtual time."""

from __future__ import annotations

import errno
import threading

import pytest
from clickhouse_driver import errors as ch_errors

from sinks.retry import (
    RetriesExhausted,
    RetryPolicy,
    RetryStopped,
    classify,
    error_code,
    is_transient,
)


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _policy(vt: VirtualTime, **kwargs: object) -> RetryPolicy:
    base: dict[str, object] = {
        "initial_delay_s": 0.1, "max_delay_s": 2.0, "multiplier": 2.0, "jitter": 0.0,
        "sleep": vt.sleep, "clock": vt.clock, "random": lambda: 0.5,
    }
    base.update(kwargs)
    return RetryPolicy(**base)  # type: ignore[arg-type]


class Flaky:
    """Fails with ``error`` ``failures`` times, then returns the number of calls."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


def test_delays_grow_exponentially_and_are_capped() -> None:
    policy = _policy(VirtualTime())
    assert [policy.delay_s(n) for n in range(1, 8)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    )
    assert policy.delay_s(10_000) == 2.0  # no float overflow for very long outages


@pytest.mark.parametrize(("draw", "factor"), [(0.0, 0.6), (1.0, 1.0), (0.5, 0.8)])
def test_jitter_stays_within_its_share_of_the_delay(draw: float, factor: float) -> None:
    policy = _policy(VirtualTime(), jitter=0.4, random=lambda: draw)
    assert policy.delay_s(3) == pytest.approx(0.4 * factor)


def test_retries_transient_errors_until_success() -> None:
    vt = VirtualTime()
    flaky = Flaky(4, ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    seen: list[tuple[int, float]] = []
    result = _policy(vt).call(flaky, on_retry=lambda n, e, d: seen.append((n, d)))
    assert result == 5
    assert vt.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert [n for n, _ in seen] == [1, 2, 3, 4]


def test_unbounded_policy_outlasts_a_long_outage() -> None:
    vt = VirtualTime()
    flaky = Flaky(200, ch_errors.NetworkError("Connection refused"))
    assert _policy(vt, attempts=None).call(flaky) == 201
    assert max(vt.sleeps) == 2.0 and len(vt.sleeps) == 200


def test_non_transient_error_is_raised_at_once() -> None:
    vt = VirtualTime()
    flaky = Flaky(1, ch_errors.ServerException("Type mismatch", code=53))
    with pytest.raises(ch_errors.ServerException):
        _policy(vt).call(flaky)
    assert flaky.calls == 1 and vt.sleeps == []


def test_bounded_attempts_raise_retries_exhausted_with_the_last_error() -> None:
    vt = VirtualTime()
    error = TimeoutError("timed out")
    flaky = Flaky(10, error)
    with pytest.raises(RetriesExhausted) as caught:
        _policy(vt, attempts=3).call(flaky)
    assert flaky.calls == 3 and caught.value.attempts == 3
    assert caught.value.__cause__ is error and len(vt.sleeps) == 2


def test_give_up_after_bounds_the_total_time() -> None:
    vt = VirtualTime()
    flaky = Flaky(100, ConnectionResetError(errno.ECONNRESET, "reset"))
    with pytest.raises(RetriesExhausted):
        _policy(vt, give_up_after_s=1.0).call(flaky)
    assert vt.now <= 1.0
    assert flaky.calls == 4  # waits 0.1 + 0.2 + 0.4 = 0.7; the next 0.8 would pass 1.0


def test_stop_event_ends_the_wait_early() -> None:
    stop = threading.Event()
    calls = []

    def failing() -> None:
        calls.append(1)
        stop.set()  # shutdown requested while the call fails
        raise ch_errors.NetworkError("down")

    policy = RetryPolicy(initial_delay_s=60.0, max_delay_s=60.0)
    with pytest.raises(RetryStopped):
        policy.call(failing, stop=stop)
    assert calls == [1]


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
        (ConnectionResetError(errno.ECONNRESET, "reset"), True),
        (BrokenPipeError(errno.EPIPE, "pipe"), True),
        (TimeoutError("timeout"), True),
        (EOFError("Unexpected EOF while reading bytes"), True),
        (OSError(errno.EHOSTUNREACH, "no route"), True),
        (OSError(errno.ENOENT, "no such file"), False),
        (ch_errors.NetworkError("Code: 210"), True),
        (ch_errors.SocketTimeoutError("Code: 209"), True),
        (ch_errors.ServerException("Too many parts", code=252), True),
        (ch_errors.ServerException("Memory limit", code=241), True),
        (ch_errors.ServerException("Syntax error", code=62), False),
        (ch_errors.ServerException("Unknown table", code=60), False),
        (ValueError("bad row"), False),
    ],
)
def test_classifier(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


def test_classifier_follows_the_cause_chain() -> None:
    try:
        try:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        except ConnectionResetError as inner:
            raise RuntimeError("insert failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"initial_delay_s": 5.0, "max_delay_s": 1.0}, {"multiplier": 0.5},
     {"jitter": 1.5}, {"give_up_after_s": -1.0}],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


_TOO_MANY_PARTITIONS = ch_errors.ServerException(
    "DB::Exception: Too many partitions for single INSERT block (more than 100). The limit is "
    "controlled by 'max_partitions_per_insert_block' setting.", code=252)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "transient"),
        (ch_errors.NetworkError("Code: 210"), "transient"),
        (ch_errors.ServerException("Too many parts (300). Merges are processing significantly "
                                   "slower than inserts.", code=252), "transient"),
        (_TOO_MANY_PARTITIONS, "permanent"),
        (ch_errors.ServerException("Unknown table", code=60), "operator"),
        (ch_errors.ServerException("Database it_x doesn't exist", code=81), "operator"),
        (ch_errors.ServerException("Authentication failed", code=516), "operator"),
        (ch_errors.TypeMismatchError("Column a: 'i' format requires ..."), "permanent"),
        (ch_errors.ServerException("Cannot parse input", code=27), "permanent"),
        (ch_errors.ServerException("Value out of range", code=321), "permanent"),
        (ch_errors.ServerException("Something new", code=12345), "permanent"),
        (ValueError("bad row"), "permanent"),
    ],
)
def test_errors_are_transient_operator_or_permanent(error: BaseException, expected: str) -> None:
    """Issue 13: 252 'too many partitions in one insert block' is permanent (it was retried
    forever); a missing table is never blamed on a row; an unknown code is permanent."""
    assert classify(error) == expected


def test_the_default_policy_retries_operator_errors_and_raises_permanent_ones() -> None:
    vt = VirtualTime()
    flaky = Flaky(3, ch_errors.ServerException("Unknown table", code=60))
    assert _policy(vt).call(flaky) == 4
    vt = VirtualTime()
    with pytest.raises(ch_errors.ServerException):
        _policy(vt).call(Flaky(1, _TOO_MANY_PARTITIONS))
    assert vt.sleeps == []


def test_error_code_reads_server_and_client_codes() -> None:
    assert error_code(ch_errors.TypeMismatchError("x")) == 53
    assert error_code(_TOO_MANY_PARTITIONS) == 252
    assert error_code(ValueError("x")) == 0
