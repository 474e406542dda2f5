"""The supervisor behind `mdmpush up`, on real child processes: restart, backoff, clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.devstack.procs import wait_for
from services.devstack.up.supervisor import Backoff, ChildSpec, Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
#: Exits 0 on SIGTERM, as the services do after draining.
POLITE = [sys.executable, "-c", textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    time.sleep(120)
""")]
#: Ignores SIGTERM: only SIGKILL ends it.
STUBBORN = [sys.executable, "-c", textwrap.dedent("""
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(120)
""")]


def _spec(tmp_path: Path, name: str, argv: list[str]) -> ChildSpec:
    log = tmp_path / f"{name}.log"
    return ChildSpec(name, argv, {}, log, ready=lambda: "ready" in _read(log))


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_backoff_doubles_to_a_ceiling_and_resets_after_a_stable_run() -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0, stable_s=60.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.consecutive(previous=3, ran_s=5.0) == 4
    assert backoff.consecutive(previous=3, ran_s=61.0) == 1


def test_a_killed_child_is_restarted_counted_and_recorded(tmp_path: Path) -> None:
    status = tmp_path / "status.json"
    sup = Supervisor([_spec(tmp_path, "svc", POLITE)],
                     backoff=Backoff(initial_s=0.05), status_path=status)
    sup.start()
    try:
        first = sup.status()["svc"]["pid"]
        assert isinstance(first, int) and os.getpgid(first) == first  # its own process group
        os.kill(first, signal.SIGKILL)

        def restarted() -> bool:
            sup.check()
            return sup.status()["svc"]["restarts"] == 1 and bool(sup.status()["svc"]["alive"])

        assert wait_for(restarted, 30.0, interval_s=0.02)
        info = json.loads(status.read_text())["svc"]
        assert info["pid"] != first and info["exits"] == [-signal.SIGKILL]
        assert info["restarts"] == 1
    finally:
        sup.stop(grace_s=5.0)


def test_crash_loop_waits_longer_each_time(tmp_path: Path) -> None:
    now = [0.0]
    crasher = [sys.executable, "-c", "raise SystemExit(3)"]
    sup = Supervisor([ChildSpec("crasher", crasher, {}, tmp_path / "c.log")],
                     backoff=Backoff(initial_s=1.0, max_s=4.0), clock=lambda: now[0])
    sup.start()
    child = sup.children[0]
    delays = []
    for _ in range(4):
        assert child.proc is not None
        child.proc.wait(30)
        sup.check()                       # notices the exit, schedules the restart
        assert child.restart_at is not None
        delays.append(child.restart_at - now[0])
        now[0] = child.restart_at         # simulated time: due now
        sup.check()                       # restarts
    assert delays == [1.0, 2.0, 4.0, 4.0]
    assert child.exits == [3, 3, 3, 3] and child.restarts == 4
    sup.stop(grace_s=5.0)


def test_stop_terms_then_kills_whoever_outlives_the_grace(tmp_path: Path) -> None:
    sup = Supervisor([_spec(tmp_path, "polite", POLITE), _spec(tmp_path, "stubborn", STUBBORN)],
                     backoff=Backoff(initial_s=0.05))
    sup.start()
    codes = sup.stop(grace_s=1.0)
    assert codes == {"polite": 0, "stubborn": -signal.SIGKILL}
    sup.check()  # stopped: nothing is restarted
    assert all(not info["alive"] for info in sup.status().values())


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        from pathlib import Path
        import sys
        from services.devstack.up.supervisor import ChildSpec, Supervisor
        sup = Supervisor([ChildSpec("c", {SLEEPER!r}, {{}}, Path({str(tmp_path / 'c.log')!r}))])
        sup.start()
        Path({str(pid_file)!r}).write_text(str(sup.status()["c"]["pid"]))
        sup.run()
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    try:
        assert wait_for(pid_file.exists, 30.0), "supervisor did not start its child"
        child = int(pid_file.read_text())
        parent.kill()
        parent.wait(10)
        assert wait_for(lambda: not _alive(child), 30.0), "child outlived its supervisor"
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


@pytest.fixture(autouse=True)
def _quiet_supervisor_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="mdmpush.up")
