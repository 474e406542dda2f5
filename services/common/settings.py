"""Configuration of the Kafka clients, read from `MDMPUSH_KAFKA_*` environment variables.

The fields map one-to-one onto librdkafka keys (as Quix Streams does), so an operator who knows
librdkafka knows what each one does; secrets are `SecretStr` so they never print in logs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Kafka requires group.min.session.timeout.ms (6 s by default) <= session timeout.
MIN_SESSION_TIMEOUT_MS = 6000


class KafkaSettings(BaseSettings):
    """Connection and client defaults shared by every service."""

    model_config = SettingsConfigDict(env_prefix="MDMPUSH_KAFKA_", frozen=True, extra="ignore")

    #: Kafka brokers to connect to first, `host:port[,host:port...]` (librdkafka bootstrap.servers).
    bootstrap_servers: str = "127.0.0.1:9092"
    #: Prefix of every client's client.id (`<client_id>-<role>`, e.g. mdmpush-sender), as the
    #: brokers' logs and quotas see it.
    client_id: str = "mdmpush"
    #: Prepended to every topic name of the catalogue; tests use it to isolate themselves.
    topic_prefix: str = ""
    #: How clients talk to the brokers (librdkafka security.protocol).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    #: SASL mechanism with SASL_* protocols (librdkafka sasl.mechanism).
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    #: SASL user name.
    sasl_username: str | None = None
    #: SASL password (secret: never printed).
    sasl_password: SecretStr | None = None
    #: CA bundle that signed the brokers' certificates (PEM file; SSL protocols).
    ssl_ca_location: str | None = None
    #: Client certificate for mutual TLS (PEM file).
    ssl_certificate_location: str | None = None
    #: Private key of the client certificate (PEM file).
    ssl_key_location: str | None = None
    #: Password of that private key (secret: never printed).
    ssl_key_password: SecretStr | None = None
    #: Confluent Schema Registry; when unset, Avro single-object encoding is used.
    schema_registry_url: str | None = None
    #: `user:password` for the Schema Registry (secret: never printed).
    schema_registry_basic_auth: SecretStr | None = None
    #: Milliseconds a producer waits to fill a batch (librdkafka linger.ms); services may set
    #: their own, `producer_overrides` wins over both.
    linger_ms: int = 5
    #: Compression of produced batches (librdkafka compression.type).
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    #: Consumer group session timeout (at least the brokers' group.min.session.timeout.ms, 6 s).
    session_timeout_ms: int = 10000
    #: Longest a consumer may go between polls before it leaves its group.
    max_poll_interval_ms: int = 300000
    #: librdkafka keys applied last, over every service's own defaults, to every producer /
    #: consumer: `MDMPUSH_KAFKA_PRODUCER_OVERRIDES='{"linger.ms": 20}'`.
    producer_overrides: dict[str, str | int | float | bool] = {}
    #: The same for every consumer: `MDMPUSH_KAFKA_CONSUMER_OVERRIDES='{"fetch.min.bytes": 1}'`.
    consumer_overrides: dict[str, str | int | float | bool] = {}
    #: Internal and changelog topics (correlator state, faust changelogs): production 3/2. A
    #: cluster with fewer brokers gets the broker count, with one warning naming this setting.
    replication_factor: int = Field(default=3, ge=1)
    #: min.insync.replicas of those topics (at most their replication factor): with acks=all a
    #: write is acknowledged once this many replicas have it.
    min_insync_replicas: int = Field(default=2, ge=1)
    #: A consumer that dead-letters more than this share of what it consumed stops (judged once
    #: `dlq_min_records` were consumed): a wrong schema must not empty a topic into the DLQ.
    dlq_max_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    #: Records a consumer must have read before `dlq_max_ratio` is judged.
    dlq_min_records: int = Field(default=100, ge=1)

    def common_config(self) -> dict[str, Any]:
        """librdkafka keys every client shares (connection and security)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": _reveal(self.sasl_password),
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": _reveal(self.ssl_key_password),
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        return conf

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """Idempotent, acks=all, lz4, a small linger: no loss and no broker-side duplicates."""
        conf = self.common_config()
        conf.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "compression.type": self.compression_type,
                "linger.ms": self.linger_ms,
            }
        )
        conf.update(overrides)
        conf.update(self.producer_overrides)
        return conf

    def consumer_config(self, group_id: str, **overrides: Any) -> dict[str, Any]:
        """Offsets are stored by the application after its work is acknowledged, never before."""
        conf = self.common_config()
        conf.update(
            {
                "group.id": group_id,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": max(self.session_timeout_ms, MIN_SESSION_TIMEOUT_MS),
                "max.poll.interval.ms": self.max_poll_interval_ms,
            }
        )
        conf.update(overrides)
        conf.update(self.consumer_overrides)
        return conf

    def admin_config(self) -> dict[str, Any]:
        """Admin client: connection and security only."""
        return self.common_config()


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
