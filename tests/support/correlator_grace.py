"""The correlator's check-in grace for the tests that run it with deadlines of seconds.

The default grace (10 s, services/correlator/settings.py) keeps an answer stamped before the
deadline but read after it from becoming a false UNANSWERED; every UNANSWERED verdict waits for
it. These tests give deadlines of 3-20 s and wait for their UNANSWERED verdicts in real time, so
the default would add 10 s to each wait; 2 s still covers the check-in reader's lag on a loaded
2-core machine (the simulated fleet's check-ins go straight to the local broker).
"""

GRACE_MS = "2000"
