"""The journey simulator: seeded, realistic touchpoint traffic for ``cx.touchpoints``.

:func:`generate` is pure (no Kafka) and deterministic; ``cxsignals.simulator.publisher.publish``
sends its messages (kept out of this package import so the generator needs no Kafka client).
"""

from cxsignals.simulator.bad import BAD_CODES
from cxsignals.simulator.journeys import SimConfig, SimMessage, generate

__all__ = ["BAD_CODES", "SimConfig", "SimMessage", "generate"]
