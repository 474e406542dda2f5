"""The sender's APNs client layer: one transport interface, libcurl and httpx behind it.

Public surface: ``types`` (request, response, transport error kinds), ``transport`` (the
``ApnsTransport`` protocol and its configuration), ``classify`` (answer → verdict),
``breaker`` (per-certificate circuit breaker) and ``pool`` (clients per endpoint and
certificate, certificate files on disk).
"""
