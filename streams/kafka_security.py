"""How every Kafka client of CX Signals authenticates: one frozen :class:`KafkaSecurity`, turned
into the options of each client library the project uses (Faust, aiokafka, kafka-python,
librdkafka).

The CLI builds it once from ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_*`` and ``KAFKA_SSL_*``
(``cxsignals/settings.py``) and hands it down in ``WorkerConfig``/``SinkConfig`` or as an argument;
nothing here reads the environment. The password is held in a field that ``repr`` never shows,
and no method puts it in an error message: failures name the setting, never its value.

Delivery guarantees are the clients' own; this module only decides how they connect. A wrong
password or certificate fails the client's start (aiokafka/kafka-python raise), it never falls
back to an unauthenticated connection.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class KafkaSecurityError(ValueError):
    """A security setting is missing, contradictory or unreadable (message names the setting,
    never a secret)."""


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """Security protocol, SASL credentials and TLS files of one Kafka principal."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise KafkaSecurityError(
                f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}, "
                f"not {self.protocol!r}")
        if self.uses_sasl:
            if self.sasl_mechanism not in MECHANISMS:
                raise KafkaSecurityError(
                    f"KAFKA_SASL_MECHANISM must be one of {', '.join(MECHANISMS)}, "
                    f"not {self.sasl_mechanism!r}")
            if not self.sasl_username:
                raise KafkaSecurityError(
                    f"KAFKA_SECURITY_PROTOCOL={self.protocol} needs KAFKA_SASL_USERNAME")
            if not self.sasl_password:
                raise KafkaSecurityError(
                    f"KAFKA_SECURITY_PROTOCOL={self.protocol} needs KAFKA_SASL_PASSWORD or "
                    "KAFKA_SASL_PASSWORD_FILE")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise KafkaSecurityError(
                "mutual TLS needs both KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE")
        if not self.uses_ssl and (self.ssl_cafile or self.ssl_certfile):
            raise KafkaSecurityError(
                f"KAFKA_SSL_* files are set but KAFKA_SECURITY_PROTOCOL={self.protocol} does not "
                "use TLS (use SSL or SASL_SSL)")
        for name, path in (("KAFKA_SSL_CAFILE", self.ssl_cafile),
                           ("KAFKA_SSL_CERTFILE", self.ssl_certfile),
                           ("KAFKA_SSL_KEYFILE", self.ssl_keyfile)):
            if path:
                try:
                    with open(path, "rb") as handle:
                        handle.read(1)
                except OSError as exc:
                    raise KafkaSecurityError(
                        f"{name}={path} cannot be read: {exc.strerror}") from None

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """For log lines: protocol, mechanism and principal, never the password."""
        if self.uses_sasl:
            return f"{self.protocol} {self.sasl_mechanism} as {self.sasl_username}"
        return self.protocol

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client TLS context that verifies the broker against ``ssl_cafile`` (else the
        system CAs) and its host name, with the client certificate for mutual TLS."""
        if not self.uses_ssl:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ssl_cafile)
        if self.ssl_certfile and self.ssl_keyfile:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def faust_credentials(self) -> Any:
        """``broker_credentials`` of ``faust.App``: Faust hands them to every aiokafka client it
        makes (consumer, producer, admin calls that create the internal topics)."""
        import faust

        context = self.ssl_context()
        if self.uses_sasl:
            # Faust derives SASL_SSL from a given ssl_context, SASL_PLAINTEXT from none.
            return faust.SASLCredentials(
                username=self.sasl_username, password=self.sasl_password,
                ssl_context=context, mechanism=self.sasl_mechanism)
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for ``AIOKafkaConsumer``, ``AIOKafkaProducer`` and
        ``AIOKafkaClient``."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        context = self.ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if self.uses_sasl:
            options.update(sasl_mechanism=self.sasl_mechanism,
                           sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password)
        return options

    def kafka_python_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's ``KafkaConsumer``, ``KafkaProducer`` and
        ``KafkaAdminClient``."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_ssl:
            options.update(ssl_check_hostname=True, ssl_cafile=self.ssl_cafile,
                           ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile)
        if self.uses_sasl:
            options.update(sasl_mechanism=self.sasl_mechanism,
                           sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password)
        return options

    def librdkafka_config(self) -> dict[str, str]:
        """Entries for a confluent-kafka (librdkafka) client configuration."""
        config = {"security.protocol": self.protocol.lower()}
        if self.uses_ssl:
            for key, value in (("ssl.ca.location", self.ssl_cafile),
                               ("ssl.certificate.location", self.ssl_certfile),
                               ("ssl.key.location", self.ssl_keyfile)):
                if value:
                    config[key] = value
        if self.uses_sasl:
            config.update({"sasl.mechanisms": self.sasl_mechanism,
                           "sasl.username": self.sasl_username or "",
                           "sasl.password": self.sasl_password or ""})
        return config


PLAINTEXT = KafkaSecurity()
