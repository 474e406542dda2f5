"""Child processes kept running: restart with backoff after a crash, stop cleanly on request.

The restart decision (`Backoff`) is pure and tested on its own; `Supervisor` is the thin runner
around `subprocess`. Each child runs in its own process group, so a Ctrl-C on the terminal reaches
only the supervisor, which then stops the children in order (SIGTERM, then SIGKILL after the
grace period) instead of every process reacting at once; and each child gets SIGTERM from the
kernel if the supervisor itself dies (Linux `PR_SET_PDEATHSIG`), so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("mdmpush.up")

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before restart n (1-based): `initial_s` doubled per crash, at most `max_s`; a child
    that ran `stable_s` before crashing starts again from `initial_s` (an isolated crash is not
    a crash loop)."""

    initial_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0

    def delay(self, consecutive: int) -> float:
        return float(min(self.max_s, self.initial_s * 2 ** max(consecutive - 1, 0)))

    def consecutive(self, previous: int, ran_s: float) -> int:
        """Crashes in a row, counting this one."""
        return 1 if ran_s >= self.stable_s else previous + 1


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One supervised command. `ready` (optional) is polled after a start before the next child
    starts: the simulator must listen before the sender connects to it."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    ready: Callable[[], bool] | None = None


@dataclass
class Child:
    spec: ChildSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    consecutive: int = 0
    restart_at: float | None = None
    exits: list[int] = field(default_factory=list)


#: Loaded once in the parent: the code between fork and exec must not load libraries.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM me when the supervisor dies, even by SIGKILL."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Supervisor:
    def __init__(self, specs: Sequence[ChildSpec], *, backoff: Backoff | None = None,
                 status_path: Path | None = None, ready_timeout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.children = [Child(spec) for spec in specs]
        self.backoff = backoff or Backoff()
        self.status_path = status_path
        self.ready_timeout_s = ready_timeout_s
        self._clock = clock
        self._stopping = threading.Event()

    # -- running ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every child in order, waiting for each one's `ready` check."""
        for child in self.children:
            if self._stopping.is_set():
                return  # Ctrl-C while starting: start nothing more
            self._spawn(child)
            ready = child.spec.ready
            if ready is None:
                continue
            deadline = self._clock() + self.ready_timeout_s
            while not ready():
                if self._clock() > deadline or self._stopping.is_set():
                    log.warning("%s not ready after %.0f s; see %s", child.spec.name,
                                self.ready_timeout_s, child.spec.log_path)
                    break
                if child.proc is not None and child.proc.poll() is not None:
                    break  # crashed while starting: the run loop restarts it
                time.sleep(0.1)

    def run(self, interval_s: float = 0.2) -> None:
        """Watch the children until `request_stop()`; restart the ones that exit."""
        while not self._stopping.wait(interval_s):
            self.check()

    def check(self) -> None:
        """One pass: notice exits, schedule and perform restarts."""
        now = self._clock()
        for child in self.children:
            proc = child.proc
            if proc is not None and child.restart_at is None:
                code = proc.poll()
                if code is None:
                    continue
                child.exits.append(code)
                child.consecutive = self.backoff.consecutive(child.consecutive,
                                                             now - child.started_at)
                delay = self.backoff.delay(child.consecutive)
                child.restart_at = now + delay
                log.warning("%s exited with %s (restart %d, %d in a row); restarting in %.1f s; "
                            "its log: %s", child.spec.name, _describe_exit(code),
                            child.restarts + 1, child.consecutive, delay, child.spec.log_path)
            if child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                child.restart_at = None
                self._spawn(child)

    def request_stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self, grace_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every child (last started first), SIGKILL whoever outlives `grace_s`.

        Returns each child's exit code (None if it was not running)."""
        self._stopping.set()
        running = [c for c in reversed(self.children)
                   if c.proc is not None and c.proc.poll() is None]
        for child in running:
            log.info("stopping %s (pid %d)", child.spec.name, _pid(child))
            _signal(child, signal.SIGTERM)
        deadline = self._clock() + grace_s
        while any(c.proc is not None and c.proc.poll() is None for c in running):
            if self._clock() >= deadline:
                for child in running:
                    if child.proc is not None and child.proc.poll() is None:
                        log.warning("%s did not stop within %.0f s: SIGKILL", child.spec.name,
                                    grace_s)
                        _signal(child, signal.SIGKILL)
                for child in running:
                    if child.proc is not None:
                        child.proc.wait()
                break
            time.sleep(0.05)
        self._write_status()
        return {c.spec.name: (c.proc.returncode if c.proc is not None else None)
                for c in self.children}

    # -- internals ----------------------------------------------------------------------------
    def _spawn(self, child: Child) -> None:
        spec = child.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(spec.env)
        with spec.log_path.open("ab") as out:
            child.proc = subprocess.Popen(
                list(spec.argv), env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, process_group=0, preexec_fn=_die_with_parent,
            )
        child.started_at = self._clock()
        log.info("%s %s (pid %d; log %s)", "restarted" if child.restarts else "started",
                 spec.name, child.proc.pid, spec.log_path)
        self._write_status()

    def status(self) -> dict[str, dict[str, object]]:
        """Per child: pid, alive, restarts, exit codes seen, log path."""
        return {
            c.spec.name: {
                "pid": _pid(c) if c.proc is not None else None,
                "alive": c.proc is not None and c.proc.poll() is None,
                "restarts": c.restarts,
                "exits": list(c.exits),
                "log": str(c.spec.log_path),
            }
            for c in self.children
        }

    def _write_status(self) -> None:
        if self.status_path is None:
            return
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=2))
        tmp.replace(self.status_path)


def _pid(child: Child) -> int:
    assert child.proc is not None
    return child.proc.pid


def _signal(child: Child, sig: signal.Signals) -> None:
    """The child's whole process group: a service's own helpers go with it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(_pid(child), sig)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
