"""Retry with bounded exponential backoff and jitter (after getsentry/arroyo's BasicRetryPolicy),
and the classification of ClickHouse errors that decides what is retried.

The policy re-runs the identical call; it never changes or drops the work. Errors fall in three
classes (:func:`classify`):

- ``transient``: the identical request may succeed later (lost connections, timeouts, overload,
  TOO_MANY_PARTS while merges lag behind). Retried forever with backoff.
- ``operator``: the request as a whole cannot succeed until someone fixes the setup (unknown
  database or table, a missing column, wrong credentials, no access). No row causes it, so no row
  is quarantined for it: retried forever too, and logged as stuck, so that a missing migration
  never sends a whole stream to a dead-letter topic.
- ``permanent``: anything else: a value a column cannot hold (client-side TypeMismatchError),
  a value ClickHouse cannot parse, too many partitions in one insert block, an unknown server
  code. Retrying the same rows cannot succeed: the writer bisects the batch and quarantines the
  rows that fail (sinks/clickhouse.py).

Clock, sleep and randomness are injectable so tests run in virtual time.
"""

from __future__ import annotations

import errno
import random as _random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from clickhouse_driver import errors as ch_errors

T = TypeVar("T")

# ClickHouse server error codes that describe a transient condition: the same insert may
# succeed later. 159 TIMEOUT_EXCEEDED, 160 TOO_SLOW, 164 READONLY, 202
# TOO_MANY_SIMULTANEOUS_QUERIES, 203 NO_FREE_CONNECTION, 209 SOCKET_TIMEOUT, 210 NETWORK_ERROR,
# 241 MEMORY_LIMIT_EXCEEDED, 242 TABLE_IS_READ_ONLY, 252 TOO_MANY_PARTS (but see
# TOO_MANY_PARTITIONS_TEXT), 285 TOO_FEW_LIVE_REPLICAS, 319 UNKNOWN_STATUS_OF_INSERT,
# 425 SYSTEM_ERROR, 999 KEEPER_EXCEPTION.
TRANSIENT_SERVER_CODES: frozenset[int] = frozenset(
    {159, 160, 164, 202, 203, 209, 210, 241, 242, 252, 285, 319, 425, 999}
)
TOO_MANY_PARTS = 252
# Code 252 also means "Too many partitions for single INSERT block (more than 100)" on servers
# with max_partitions_per_insert_block (19.x and later): a property of the rows, not of the
# server's state, so it is permanent. The writer splits inserts by partition to avoid it.
TOO_MANY_PARTITIONS_TEXT = "partitions for single insert block"

# Codes about the request as a whole, never about a row: 8 THERE_IS_NO_COLUMN,
# 10 NOT_FOUND_COLUMN_IN_BLOCK, 16 NO_SUCH_COLUMN_IN_TABLE, 47 UNKNOWN_IDENTIFIER, 60
# UNKNOWN_TABLE, 62 SYNTAX_ERROR, 81 UNKNOWN_DATABASE, 115 UNKNOWN_SETTING, 192 UNKNOWN_USER,
# 193 WRONG_PASSWORD, 194 REQUIRED_PASSWORD, 195 IP_ADDRESS_NOT_ALLOWED, 218 TABLE_IS_DROPPED,
# 291 DATABASE_ACCESS_DENIED, 497 ACCESS_DENIED, 516 AUTHENTICATION_FAILED.
OPERATOR_SERVER_CODES: frozenset[int] = frozenset(
    {8, 10, 16, 47, 60, 62, 81, 115, 192, 193, 194, 195, 218, 291, 497, 516}
)

_TRANSIENT_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
     errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EAGAIN}
)

ErrorClass = Literal["transient", "operator", "permanent"]


def classify(error: BaseException) -> ErrorClass:
    """``transient``, ``operator`` or ``permanent`` (see the module docstring)."""
    if is_transient(error):
        return "transient"
    if needs_operator(error):
        return "operator"
    return "permanent"


def is_retriable(error: BaseException) -> bool:
    """True unless the error is permanent: the production sink retries these forever."""
    return classify(error) != "permanent"


def _chain(error: BaseException) -> list[BaseException]:
    seen: set[int] = set()
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def is_transient(error: BaseException) -> bool:
    """True for errors after which the identical request may succeed: retry them.

    Connection refused/reset/aborted, broken pipe, timeouts, an unexpected end of stream,
    clickhouse_driver's NetworkError and SocketTimeoutError, and server exceptions whose code is
    in :data:`TRANSIENT_SERVER_CODES` (252 only when it means too many parts, not too many
    partitions in one insert block). The cause chain is followed, since drivers wrap errors.
    """
    return any(_is_transient_one(one) for one in _chain(error))


def needs_operator(error: BaseException) -> bool:
    """True for server errors about the request as a whole (:data:`OPERATOR_SERVER_CODES`)."""
    return any(
        isinstance(one, ch_errors.ServerException) and one.code in OPERATOR_SERVER_CODES
        for one in _chain(error)
    )


def error_code(error: BaseException) -> int:
    """The ClickHouse error code of ``error`` (clickhouse-driver's client-side errors carry one
    too, e.g. 53 TYPE_MISMATCH), or 0 when it has none."""
    for one in _chain(error):
        code = getattr(one, "code", None)
        if isinstance(code, int):
            return code
    return 0


def _is_transient_one(error: BaseException) -> bool:
    if isinstance(error, ch_errors.NetworkError | ch_errors.SocketTimeoutError):
        return True
    if isinstance(error, ch_errors.ServerException):
        if error.code == TOO_MANY_PARTS and TOO_MANY_PARTITIONS_TEXT in str(error).lower():
            return False
        return error.code in TRANSIENT_SERVER_CODES
    if isinstance(error, ConnectionError | TimeoutError | EOFError):
        return True
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


class RetryStopped(Exception):
    """Retrying was interrupted by the stop event; the work was not done."""


class RetriesExhausted(Exception):
    """A bounded policy ran out of attempts; ``__cause__`` is the last error."""

    def __init__(self, attempts: int, last_error: BaseException) -> None:
        super().__init__(f"gave up after {attempts} attempts: {last_error!r}")
        self.attempts = attempts
        self.last_error = last_error


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts (None = unbounded) with delays ``initial_delay_s * multiplier**(n-1)`` capped at
    ``max_delay_s``; ``jitter`` is the share of each delay that is random (0 = none, 1 = full
    jitter), so a fleet of workers does not reconnect in lock-step.

    ``give_up_after_s`` (None = never) bounds the total time by ``clock``, counted from the first
    attempt. The production sink uses neither bound: it waits for ClickHouse as long as it takes,
    and the offsets of the unwritten batch stay uncommitted meanwhile.
    """

    attempts: int | None = None
    give_up_after_s: float | None = None
    initial_delay_s: float = 0.1
    max_delay_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    is_retryable: Callable[[BaseException], bool] = is_retriable
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    random: Callable[[], float] = field(default=_random.random, compare=False)

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be >= 1 or None (unbounded)")
        if self.give_up_after_s is not None and self.give_up_after_s < 0:
            raise ValueError("give_up_after_s must be >= 0 or None (never)")
        if self.initial_delay_s < 0 or self.max_delay_s < self.initial_delay_s:
            raise ValueError("need 0 <= initial_delay_s <= max_delay_s")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")

    def delay_s(self, failures: int) -> float:
        """The wait after the ``failures``-th consecutive failure (1-based), within
        ``[(1 - jitter) * base, base]`` where ``base = min(max_delay_s, initial * mult**(n-1))``.
        """
        # Cap the exponent so huge failure counts do not overflow the float.
        exponent = min(failures - 1, 64)
        base = min(self.max_delay_s, self.initial_delay_s * self.multiplier**exponent)
        return base * (1 - self.jitter) + base * self.jitter * self.random()

    def call(
        self,
        fn: Callable[[], T],
        *,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
        stop: threading.Event | None = None,
    ) -> T:
        """Run ``fn`` until it returns, retrying the errors ``is_retryable`` accepts (default:
        transient and operator errors).

        ``on_retry(failures, error, delay_s)`` is called before each wait. A permanent error
        is raised unchanged; a bounded policy raises RetriesExhausted (cause = last error) after
        its last attempt or when the next wait would pass ``give_up_after_s``. When ``stop`` is
        set, the wait ends early and RetryStopped is raised (used at shutdown: the work is not
        done and its offsets must not be committed).
        """
        failures = 0
        started = self.clock()
        while True:
            if stop is not None and stop.is_set():
                raise RetryStopped("stopped before the call succeeded")
            try:
                return fn()
            except Exception as error:
                if not self.is_retryable(error):
                    raise
                failures += 1
                if self.attempts is not None and failures >= self.attempts:
                    raise RetriesExhausted(failures, error) from error
                delay = self.delay_s(failures)
                if (
                    self.give_up_after_s is not None
                    and self.clock() + delay - started > self.give_up_after_s
                ):
                    raise RetriesExhausted(failures, error) from error
                if on_retry is not None:
                    on_retry(failures, error, delay)
                if stop is not None:
                    if stop.wait(delay):
                        raise RetryStopped("stopped while waiting to retry") from error
                else:
                    self.sleep(delay)
