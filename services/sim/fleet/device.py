"""One simulated device: its state, its counters, and how it reacts to a push (no I/O here).

:meth:`SimDevice.on_push` is the device's whole decision, a pure state transition, so every cause
of the Apple seed is testable without threads; the fleet performs what it returns (check in,
TokenUpdate) on its scheduler. All methods run on the fleet's scheduler thread.

Push-magic self-healing, as the seed describes it: a push with everything correct but the
PushMagic records the time it arrived and makes no contact; a correct-magic push within the next
25 hours resets (clears) that record; a wrong-magic push at least 25 hours after the recorded time
makes the device send a TokenUpdate and poll for commands (and clears the record).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from services.sim.fleet.events import Enrollment
from services.sim.fleet.truth import Cause

__all__ = ["AfterEnroll", "Reception", "SimDevice"]

HOUR_MS = 3_600_000
#: The seed's self-healing window.
SELF_HEAL_AFTER_MS = 25 * HOUR_MS


class AfterEnroll(enum.Enum):
    """What happens to a device right after it enrolled (how a scenario sets up its cause)."""

    STAY = "stay"
    GO_OFFLINE = "go_offline"
    UNENROLL_SILENT = "unenroll_silent"  # profile removed, CheckOut lost
    UNENROLL_CHECKOUT = "unenroll_checkout"
    WIPE = "wipe"  # erased: no CheckOut


class Reception(enum.Enum):
    """What became of one push APNs handed to the device."""

    ANSWERED = "answered"  # correct push: the device polls for commands
    WRONG_MAGIC = "wrong_magic"  # recorded (or within the 25 h window): no contact
    SELF_HEAL = "self_heal"  # wrong magic >= 25 h after the record: TokenUpdate + poll
    VOID_TOKEN = "void_token"  # sent to the token the device had before a restore
    RESTORE_NOTICED = "restore_noticed"  # first such push: the new token's TokenUpdate is owed
    RACE_LOST = "race_lost"  # arrived before the device listened after enrolling
    NOT_ENROLLED = "not_enrolled"  # unenrolled or wiped: ignored
    NOT_MDM = "not_mdm"  # no {"mdm": ...} payload: nothing for mdmd to do

    @property
    def received(self) -> bool:
        """Whether the device's mdmd actually saw the push."""
        return self in _RECEIVED


_RECEIVED = frozenset({Reception.ANSWERED, Reception.WRONG_MAGIC, Reception.SELF_HEAL,
                       Reception.NOT_MDM})


@dataclass(slots=True, eq=False)
class SimDevice:
    """A device with its enrollment(s) and push token(s).

    ``enrollment`` is the record the device itself uses; ``stale_enrollment`` an older record of
    the same UDID the server kept because its CheckOut was lost (STALE_MAGIC). ``token_hex`` is the
    token the device listens on; after a restore ``enrollment.token_hex`` is the old one until the
    device reports the new token.
    """

    udid: str
    cause: Cause
    enrollment: Enrollment
    token_hex: str
    stale_enrollment: Enrollment | None = None
    #: Simulated ms between the TokenUpdate and listening for pushes (the enrollment race).
    listen_delay_ms: int = 0
    after_enroll: AfterEnroll = AfterEnroll.STAY
    #: For GO_OFFLINE: simulated ms until the device is back online (None: stays offline).
    offline_for_ms: int | None = None
    #: From receiving a push to the command poll, for a slow device (None: the fleet's
    #: ``checkin_delay_ms``). Set around the correlator's deadline, it makes a late answer.
    checkin_delay_ms: int | None = None
    #: The command poll reaches the server this long after it was made (and stamped): a slow
    #: network or gateway; around the deadline, an answer in time that arrives too late.
    poll_delivered_after_ms: int = 0
    #: The device polls once right after enrolling, and that check-in reaches the server only
    #: when :meth:`~services.sim.fleet.fleet.Fleet.release_held` is called: stamped before a
    #: later push, delivered after it (an out-of-order check-in that must not answer the push).
    held_poll: bool = False
    #: STALE_MAGIC: the older record's check-ins are delivered after the newer record's (they
    #: are still stamped earlier), so only the stamps, not the arrival order, say which is newer.
    stale_delivered_last: bool = False

    online: bool = True
    enrolled: bool = False
    listening_from_ms: int = 0
    wrong_magic_since_ms: int | None = None
    restore_noticed: bool = False
    checkin_pending: bool = False

    pushes_received: int = 0
    pushes_lost: int = 0
    wrong_magic_pushes: int = 0
    self_heals: int = 0
    #: Pushes that arrived while the device was not listening yet after enrolling.
    races_lost: int = 0
    checkins_sent: int = 0

    @property
    def topic(self) -> str:
        """The push topic the device listens for (its enrollment's)."""
        return self.enrollment.topic

    @property
    def old_token_hex(self) -> str | None:
        """The pre-restore token the server still holds, while the device has not reported."""
        token = self.enrollment.token_hex
        return token if token != self.token_hex else None

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token APNs knows for this device (the old one too: it still answers 200)."""
        old = self.old_token_hex
        return (self.token_hex,) if old is None else (self.token_hex, old)

    def enrolled_at(self, at_ms: int) -> None:
        """The TokenUpdate went out at ``at_ms``: listen after the race window."""
        self.enrolled = True
        self.listening_from_ms = at_ms + self.listen_delay_ms

    def report_new_token(self) -> Enrollment:
        """After a restore: the enrollment with the token the device now listens on."""
        self.enrollment = replace(self.enrollment, token_hex=self.token_hex)
        return self.enrollment

    def on_push(
        self,
        token_hex: str,
        magic: str | None,
        at_ms: int,
        self_heal_after_ms: int = SELF_HEAL_AFTER_MS,
    ) -> Reception:
        """Decide what a push APNs delivered at simulated ``at_ms`` does, and count it."""
        reception = self._react(token_hex, magic, at_ms, self_heal_after_ms)
        if reception is Reception.RACE_LOST:
            self.races_lost += 1
        if reception.received:
            self.pushes_received += 1
        else:
            self.pushes_lost += 1
        return reception

    def _react(
        self, token_hex: str, magic: str | None, at_ms: int, self_heal_after_ms: int
    ) -> Reception:
        if token_hex != self.token_hex:
            if self.restore_noticed:
                return Reception.VOID_TOKEN
            self.restore_noticed = True
            return Reception.RESTORE_NOTICED
        if not self.enrolled:
            return Reception.NOT_ENROLLED
        if at_ms < self.listening_from_ms:
            return Reception.RACE_LOST
        if magic is None:
            return Reception.NOT_MDM
        since = self.wrong_magic_since_ms
        if magic == self.enrollment.push_magic:
            if since is not None and at_ms - since < self_heal_after_ms:
                self.wrong_magic_since_ms = None
            return Reception.ANSWERED
        self.wrong_magic_pushes += 1
        if since is None:
            self.wrong_magic_since_ms = at_ms
            return Reception.WRONG_MAGIC
        if at_ms - since >= self_heal_after_ms:
            self.wrong_magic_since_ms = None
            self.self_heals += 1
            return Reception.SELF_HEAL
        return Reception.WRONG_MAGIC
