"""APNs provider API simulator: HTTP/2 + TLS on loopback, for tests, the demo and benchmarks.

Never used in production. :mod:`services.sim.apns.server` is the simulator: it handles each
request (faults, answer, counters) for :mod:`services.sim.apns.connection`, which only speaks
HTTP/2; :mod:`services.sim.apns.certs` makes the test PKI and :mod:`services.sim.apns.fleet_port`
is the interface the device fleet implements.
"""
