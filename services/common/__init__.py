"""Kafka plumbing every service shares: settings, topic catalogue, Avro serde, clock."""
