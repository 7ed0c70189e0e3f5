"""What publishing guarantees and reports, shared by both publishers."""

from __future__ import annotations

from dataclasses import dataclass, field

# The too_large bad messages (just over 1 MiB) must reach the broker so the pipeline can dead-
# letter them: the producer allows 2 MiB requests, and the broker's and the topic's
# message.max.bytes must allow 2 MiB too (the Kafka default is ~1 MiB).
MAX_REQUEST_BYTES = 2 * 1024 * 1024  # > TOO_LARGE_BYTES plus batch overhead


class BrokerUnavailable(RuntimeError):
    """Kafka could not be reached (or the topic never appeared): nothing was published."""


@dataclass
class PublishStats:
    """What a publish call did.

    ``sent`` = attempted - failed: messages the broker acknowledged, unless ``first_error``
    reports a flush timeout, after which some of them may still be undelivered.
    """

    attempted: int = 0
    failed: int = 0
    bad: int = 0  # deliberately bad messages among the attempted ones
    value_bytes: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C (after flushing)
    first_error: str | None = None
    errors_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return self.attempted - self.failed

    @property
    def rate_per_s(self) -> float:
        return self.attempted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        text = (
            f"{self.sent:,} of {self.attempted:,} messages delivered ({self.bad:,} deliberately "
            f"bad) in {self.elapsed_s:.1f} s, {self.rate_per_s:,.0f} msg/s"
        )
        if self.failed:
            text += f"; {self.failed:,} failed, first error: {self.first_error}"
        if self.interrupted:
            text += " (stopped by Ctrl-C)"
        return text

    def record_error(self, exc: BaseException) -> None:
        self.failed += 1
        name = type(exc).__name__
        self.errors_by_type[name] = self.errors_by_type.get(name, 0) + 1
        if self.first_error is None:
            self.first_error = f"{name}: {exc}"
