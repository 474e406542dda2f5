"""correlator."""
