"""Fan-out: the device registry, and one NotificationRequest -> one PushJob per target.

Run a worker with `python -m services.fanout` (settings: `services.fanout.settings`), or build
the app in-process with `services.fanout.app.create_app(settings, kafka)`.

Data flow, and why
------------------
Requests are keyed by tenant, check-ins and outcomes by enrollment id, and each input's
partitioning is whatever its producer's partitioner chose, so no two inputs are co-partitioned.
Instead of a GlobalTable (every worker would hold and replay the whole registry, and writes to a
faust GlobalTable from several workers are the least-tested path of faust), the fan-out owns one
partitioning of its own, `registry_partition(enrollment id) = crc32 % partitions`, and brings
every piece of work to the partition that holds its data::

    checkins ──(decode, DLQ)──┐   (co-partitioned records are applied where consumed)
    outcomes ──(410 only)─────┴─► <app>-registry-updates ─► registry table ─► mdm.device.registry.v1
      (read in C by dead_tokens.py, not by a faust agent: only the sender's marked 410s)
                                       (partition = registry_partition)
    requests ──(decode, DLQ)──► <app>-slices ─► expand (reads the registry table of its partition)
                                 target_all: one slice per partition;     ─► jobs (priority/bulk)
                                 explicit: ids grouped by partition,      ─► SKIPPED outcomes
                                 ≤ chunk_size per slice

A check-in on partition p is co-partitioned with the registry when its topic has `partitions`
partitions and the record's key maps to p (librdkafka's default partitioner, crc32 of the key,
does): it is applied in place, in batches; only the others take the registry-updates hop.
Check-ins are read by librdkafka beside faust (checkin_reader.py; faust's per-event streams held
the registry build to ~5,000 check-ins/s), partition p by the worker faust gave registry
partition p, with offsets in the group `<app id>-checkins`.

The registry-updates and slices topics, the registry table and the slice-progress table all
have `partitions` partitions and are produced with explicit partition numbers, so faust assigns
partition p of all four to the same worker: a slice is expanded where its enrollments live,
whatever the number of workers, and a target_all request sees every enrollment of its tenant.
A slice is keyed `request_id@partition[.n]` and expanded in acknowledged chunks whose progress
is recorded in the slice-progress table (see `expand`), so a redelivered or republished request
does not double its jobs. The registry and progress live in faust tables with changelogs, so a
restarted worker (on any machine) recovers them from Kafka.

Coalescing and inactive enrollments (docs/coalescing.md): a third table, `carriers`, partitioned
like the registry, holds each enrollment's outstanding push; a bulk target with one is SKIPPED
`coalesced` and rides on it, a bulk target the correlator marked INACTIVE
(`mdm.enrollment.activity.v1`, read in full by every worker) is SKIPPED `inactive`. Priority
targets are never coalesced nor skipped as inactive.

Bounds (docs/fanout-bounds.md): a check-in naming no tenant, or one that is neither an
Authenticate nor a TokenUpdate from an enrollment the registry does not know, makes no record
(counted in `mdmpush_fanout_checkins_refused_total`). An enrollment that authenticated and sent
no TokenUpdate for MDMPUSH_FANOUT_PENDING_ENROLLMENT_TTL_MS (24 h) is swept from the registry
(tombstones): the registry holds the pushable enrollments plus at most one TTL of pending ones.
"""
