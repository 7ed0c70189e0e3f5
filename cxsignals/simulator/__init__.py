"""The journey simulator: seeded, realistic touchpoint traffic for ``cx.touchpoints``.

:func:`generate` is pure (no Kafka) and deterministic; :func:`publish` sends its messages.
"""

from cxsignals.simulator.bad import BAD_CODES
from cxsignals.simulator.journeys import SimConfig, SimMessage, generate

__all__ = ["BAD_CODES", "SimConfig", "SimMessage", "generate"]
