"""Alert ids: deterministic, so that a replay yields the same ids and consumers deduplicate."""

from __future__ import annotations

import hashlib
import uuid
from typing import Final

ALERT_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/cx-signals/alerts")
_NAMESPACE_BYTES: Final = ALERT_NAMESPACE.bytes
# RFC 4122 variant bits (10xx) applied to the hex digit that carries them.
_VARIANT_DIGIT: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


_CONTROL_SCALE: Final = float(1 << 64)


def control_fraction(alert_id_: str) -> float:
    """Where an alert id falls in [0, 1): the first 8 bytes of SHA-256 of its text, big-endian.

    Stable across processes, machines and Python versions (unlike ``hash()``), so a replay puts
    every alert in the same group. SHA-256 rather than the id's own SHA-1 digits, so that the
    group does not depend on how the id is derived.
    """
    digest = hashlib.sha256(alert_id_.encode()).digest()
    return int.from_bytes(digest[:8], "big") / _CONTROL_SCALE


def in_control_group(alert_id_: str, control_share: float) -> bool:
    """Whether the alert is withheld as a control alert of a rule with ``control_share``."""
    return control_share > 0.0 and control_fraction(alert_id_) < control_share


def alert_id(rule: str, customer_id: str, evidence: list[str]) -> str:
    """Deterministic alert id: UUIDv5 of rule, customer and the triggering event ids.

    Equal to ``str(uuid.uuid5(ALERT_NAMESPACE, "\\x1f".join([rule, customer_id, *evidence])))``
    (RFC 4122 section 4.3: SHA-1 of namespace + name, version digit 5, variant bits 10),
    written on the hex digest because it runs for every candidate alert, including the
    suppressed ones, and going through ``uuid.UUID`` costs three times the SHA-1 itself.
    """
    name = "\x1f".join([rule, customer_id, *evidence]).encode()
    h = hashlib.sha1(_NAMESPACE_BYTES + name).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT_DIGIT[h[16]]}{h[17:20]}-{h[20:32]}"
