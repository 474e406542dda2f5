"""Gateway: HTTP in front of Kafka (NanoMDM webhook and check-ins, push API)."""
