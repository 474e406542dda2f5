"""Dead-letter tooling: what is on the DLQ, why, and putting push jobs back on their lane.

A pure core (records.py reads one dead letter, select.py filters and groups, replay.py decides
what a record becomes when replayed) and one runner (runner.py) that reads the DLQ, consults the
replay ledger (ledger.py) and produces. `mdmpush dlq` is the shell face of it.
"""
