"""CPU time as Linux accounts it (``/proc``), for benchmarks that report CPU per push: a figure
that depends far less on what else the shared machine runs than a rate does.

``CpuLedger`` answers where a run's CPU went: the benchmark's own child processes grouped by the
role their command line names (a service, the simulator, the devices), the broker's, everything
else on the machine as "others", and the machine's busy time, so that a run can be held against
what its cores could give at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")

#: Roles counted wherever they run (one broker serves every benchmark on the machine).
SHARED_ROLES = frozenset({"broker", "zookeeper"})
#: (role, a substring of the command line that names it), first match wins.
ROLES: tuple[tuple[str, str], ...] = (
    ("sender", "-m services.sender"),
    ("fan-out", "-m services.fanout"),
    ("correlator", "-m services.correlator"),
    ("gateway", "-m services.gateway"),
    ("simulator", "sim_arrivals"),
    ("simulator", "-m services.sim"),
    ("devices", "tests.support.device_answers"),
    ("broker", "kafka.Kafka"),
    ("zookeeper", "QuorumPeerMain"),
)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state is [0], ppid [1])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cpu_of(fields: list[str]) -> float:
    """User + system CPU seconds, all threads, from a process's stat fields."""
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far, all its threads (None if it is gone)."""
    fields = _stat(pid)
    return None if fields is None else _cpu_of(fields)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far, all cores (not idle, not iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


def role_of(cmdline: str) -> str:
    for role, marker in ROLES:
        if marker in cmdline:
            return role
    return "other"


def _by_pid() -> dict[int, tuple[str, float]]:
    """(role, CPU seconds) of every process: a role for this process's descendants and the
    shared ones, "others" for the rest."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = fields
    me = os.getpid()

    def ours(pid: int) -> bool:
        for _ in range(64):  # bounded: a ppid chain is short
            if pid == me:
                return True
            fields = stats.get(pid)
            if fields is None or pid <= 1:
                return False
            pid = int(fields[1])
        return False

    seen: dict[int, tuple[str, float]] = {}
    for pid, fields in stats.items():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                "utf-8", "replace")
        except OSError:
            continue
        role = role_of(cmdline) if pid != me else "benchmark"
        if role not in SHARED_ROLES and not ours(pid):
            role = "others"
        seen[pid] = (role, _cpu_of(fields))
    return seen


@dataclass
class CpuLedger:
    """CPU spent between `start()` and `stop()`, per role and by the whole machine.

    A process that started during the window counts from 0; one that ended during it counts
    up to its last reading at `start`, which only lowers its role's figure."""

    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    by_role: dict[str, float] = field(default_factory=dict)
    busy_s: float = 0.0
    wall_s: float = 0.0
    _start: dict[int, tuple[str, float]] = field(default_factory=dict)
    _start_busy: float = 0.0
    _start_wall: float = 0.0

    def start(self) -> None:
        self._start = _by_pid()
        self._start_busy = machine_busy_seconds()
        self._start_wall = _uptime()

    def stop(self) -> None:
        self.by_role = {}
        for pid, (role, used) in _by_pid().items():
            before = self._start.get(pid)
            spent = used - (before[1] if before is not None and before[0] == role else 0.0)
            self.by_role[role] = self.by_role.get(role, 0.0) + max(spent, 0.0)
        self.busy_s = machine_busy_seconds() - self._start_busy
        self.wall_s = _uptime() - self._start_wall

    def report(self, count: int, unit: str) -> list[str]:
        """Lines: CPU per `unit` (a push, a check-in) of each role and of the machine, and the
        cores each kept busy."""
        if count <= 0 or self.wall_s <= 0:
            return [f"CPU: no {unit} in the window"]
        lines = [f"CPU per {unit} over {self.wall_s:.1f} s ({count:,}), by process role:"]
        for role, spent in sorted(self.by_role.items(), key=lambda kv: -kv[1]):
            if spent > 0:
                lines.append(f"  {role:>11}: {spent / count * 1e6:7.1f} us "
                             f"({spent / self.wall_s:.2f} cores)")
        lines.append(f"  {'machine':>11}: {self.busy_s / count * 1e6:7.1f} us busy "
                     f"({self.busy_s / self.wall_s:.2f} of {self.cores} cores)")
        return lines


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])
