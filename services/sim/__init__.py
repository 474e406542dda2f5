"""Simulators used by tests, demo and benchmarks (never production): APNs and devices."""
