"""The APNs simulator in a process of its own that also records when each push arrived.

Benchmarks count pushes where they land, not from the client's own stamps: a client may stamp a
push as sent before the server has it, and a rate from its outcomes is its own schedule. The
recording is a device gateway (every device online, like ``AcceptAllGateway``) that appends the
arrival time (``time.time()``, taken when the simulator accepts the push), the certificate topic,
the device token and the connection it came on (so a benchmark sees how many client processes
sent); on SIGTERM
the process writes ``--arrivals-file`` (JSON: counters, topics, times, connections).

    python tests/bench/sim_arrivals.py --certs DIR --ready-file F --arrivals-file A
        [--client-auth optional] [--max-concurrent-streams N]

The benchmark records its phases' wall-clock bounds and splits the arrivals by them
(:func:`Arrivals.between`). Not a pytest test.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import signal
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

# Run as a script: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.sim.apns.connection import Answer, Headers, PeerIdentity
from services.sim.apns.faults import Faults
from services.sim.apns.fleet_port import STATUS_ACTIVE, AcceptedPush, TokenStatus
from services.sim.apns.server import ApnsSimulator, SimulatorConfig
from tests.support.bench_env import stopping
from tests.support.sender_harness import REPO


class ArrivalsGateway:
    """Every token active, every device online; remembers (time, topic) of each accepted push.

    Called on the simulator's loop thread only (no ``device_connected`` in a benchmark), so two
    appends and no lock: a few hundred nanoseconds beside the HTTP/2 work of a push.
    """

    def __init__(self) -> None:
        self.at = array("d")
        self.topic_index = array("H")
        self.connection = array("I")
        self.tokens: list[str] = []
        self.topics: dict[str, int] = {}
        #: Each connection's peer (one object per connection, kept so its index stays its own).
        self.peers: dict[PeerIdentity, int] = {}
        self.peer: PeerIdentity | None = None

    def token_status(self, token_hex: str, topic: str) -> TokenStatus:
        return STATUS_ACTIVE

    def deliver(self, push: AcceptedPush) -> bool:
        self.at.append(time.time())
        index = self.topics.get(push.topic)
        if index is None:
            index = self.topics[push.topic] = len(self.topics)
        self.topic_index.append(index)
        peer = self.peers.setdefault(self.peer, len(self.peers)) if self.peer is not None else 0
        self.connection.append(peer)
        self.tokens.append(push.token_hex)
        return True

    def records(self, topic: str) -> list[tuple[float, int, str]]:
        """(arrival time, connection, token) of each push of `topic` so far (any thread)."""
        index = self.topics.get(topic)
        return [(t, c, token) for t, i, c, token in zip(
            self.at.tolist(), self.topic_index.tolist(), self.connection.tolist(),
            list(self.tokens), strict=False) if i == index]


class ArrivalsSimulator(ApnsSimulator):
    """The simulator, telling its :class:`ArrivalsGateway` which connection a request is on."""

    def __init__(self, config: SimulatorConfig, gateway: ArrivalsGateway,
                 faults: Faults | None = None) -> None:
        super().__init__(config, gateway=gateway, faults=faults)
        self.recorder = gateway

    def answer(self, peer: PeerIdentity, headers: Headers, body: bytes) -> Answer:
        self.recorder.peer = peer
        return super().answer(peer, headers, body)


@dataclass
class Arrivals:
    """What the simulator recorded: arrival times (epoch seconds, sorted) and their topics."""

    at: list[float]
    topic: list[str]
    accepted: int
    refused_streams: int

    @classmethod
    def load(cls, path: Path) -> Arrivals:
        data = json.loads(path.read_text())
        names = data["topics"]
        pairs = sorted(zip(data["at"], data["topic_index"], strict=True))
        return cls([t for t, _ in pairs], [names[i] for _, i in pairs],
                   data["stats"]["accepted"], data["stats"]["refused_streams"])

    def between(self, start: float, end: float, topic: str | None = None) -> list[float]:
        """Arrival times within [start, end] (of one topic if given), sorted."""
        lo, hi = bisect.bisect_left(self.at, start), bisect.bisect_right(self.at, end)
        if topic is None:
            return self.at[lo:hi]
        return [t for t, name in zip(self.at[lo:hi], self.topic[lo:hi], strict=True)
                if name == topic]


def rate(times: list[float]) -> float:
    """Pushes/s from the first to the last arrival (0 for fewer than two)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def largest_burst(times: list[float], window_s: float = 1.0) -> int:
    """Most arrivals inside any window of `window_s` seconds (sliding, anchored at arrivals)."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window_s:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@contextmanager
def arrivals_sim(certs: Path, directory: Path, client_auth: str = "required",
                 max_concurrent_streams: int = 1000) -> Iterator[tuple[int, list[Arrivals]]]:
    """Run this module as a process for the block; yields its port and a list that holds the
    :class:`Arrivals` once the block has ended (the simulator writes them when it stops)."""
    ready, out = directory / "sim-arrivals.ready", directory / "sim-arrivals.json"
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--certs", str(certs), "--ready-file",
         str(ready), "--arrivals-file", str(out), "--client-auth", client_auth,
         "--max-concurrent-streams", str(max_concurrent_streams)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=(directory / "sim.log").open("wb"),
    )
    result: list[Arrivals] = []
    with stopping(process, timeout_s=60):
        for _ in range(400):  # bounded: 20 s
            if ready.exists() and ready.read_text().endswith("\n"):
                break
            if process.poll() is not None:
                sys.exit(f"the simulator exited; see {directory / 'sim.log'}")
            time.sleep(0.05)
        else:
            process.kill()
            sys.exit("the simulator did not start")
        yield int(ready.read_text().split()[2]), result
    result.append(Arrivals.load(out))


async def serve(args: argparse.Namespace) -> None:
    gateway = ArrivalsGateway()
    sim = ArrivalsSimulator(
        SimulatorConfig(
            server_cert=args.certs / "server.pem", server_key=args.certs / "server.key",
            ca_cert=args.certs / "ca.pem", client_auth=args.client_auth,
            max_concurrent_streams=args.max_concurrent_streams,
        ),
        gateway,
    )
    await sim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    args.ready_file.write_text(f"READY 127.0.0.1 {sim.port}\n")
    await stop.wait()
    await sim.stop()
    args.arrivals_file.write_text(json.dumps({
        "stats": asdict(sim.snapshot()) | {"by_token": None},
        "topics": list(gateway.topics),
        "at": gateway.at.tolist(),
        "topic_index": gateway.topic_index.tolist(),
    }, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certs", type=Path, required=True, help="ca.pem, server.pem, .key")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--arrivals-file", type=Path, required=True)
    parser.add_argument("--client-auth", choices=["required", "optional"], default="required")
    parser.add_argument("--max-concurrent-streams", type=int, default=1000)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
