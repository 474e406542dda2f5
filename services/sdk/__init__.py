"""Python SDK: how any MDM component publishes notification requests."""
