"""APNs provider API simulator: HTTP/2 + TLS on loopback, for tests, the demo and benchmarks.

Never used in production. See :mod:`services.sim.apns.server` for the simulator,
:mod:`services.sim.apns.certs` for the test PKI and :mod:`services.sim.apns.fleet_port` for the
interface the device fleet implements.
"""
