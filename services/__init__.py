"""mdmpush: one subpackage per deployable, plus the shared Kafka plumbing in `services.common`."""
