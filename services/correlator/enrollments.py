"""What the check-in events say about each enrollment and each device (UDID), packed.

Every field merges monotonically (latest TokenUpdate wins by its time, contacts and CheckOuts
keep their maximum), so the book does not depend on the order events arrive in: replaying the
check-in topic after a restart, or reading two partitions interleaved, gives the same book.
Enrollments of one UDID are chained (`udid_next`), which is how duplicate enrollment records
(a re-enrollment whose CheckOut was lost) are found for the stale-PushMagic diagnosis.

Two contact times are kept: any message (evidence of life, `last_contact_at`) and the last
*answer* (`last_answer_at`): a command poll or report, which is what a push makes a device send.
Authenticate, TokenUpdate and CheckOut are the device's own initiative: a TokenUpdate after a
backup-and-restore is exactly the stale-token case, not an answer to the push to the old token.
"""

from __future__ import annotations

from array import array
from typing import Any

from services.correlator.diagnose import EnrollmentFacts, Sibling
from services.correlator.packed import FixedText, Interner

#: Check-in types a device sends on its own, never because it received a push.
_NOT_ANSWERS = frozenset({"AUTHENTICATE", "TOKEN_UPDATE", "CHECK_OUT"})


class EnrollmentBook:
    def __init__(self, enrollments: Interner, topics: Interner) -> None:
        self.ids = enrollments
        self.topics = topics
        self.udids = Interner()
        self.udid = array("i")
        self.udid_next = array("i")
        self.udid_head = array("i")
        self.topic = array("i")
        self.token = FixedText(32)
        self.magic = FixedText(16)
        self.enrolled_at = array("q")
        self.token_updated_at = array("q")
        self.last_contact_at = array("q")
        self.last_answer_at = array("q")
        self.checkout_at = array("q")

    def index(self, enrollment_id: str) -> int:
        """The enrollment's row, created empty on first sight."""
        enr = self.ids.intern(enrollment_id)
        while len(self.udid) <= enr:
            for col in (self.udid, self.udid_next, self.topic):
                col.append(-1)
            for t in (self.enrolled_at, self.token_updated_at, self.last_contact_at,
                      self.last_answer_at, self.checkout_at):
                t.append(0)
            self.token.append_empty()
            self.magic.append_empty()
        return enr

    def apply(self, event: dict[str, Any]) -> tuple[int, int]:
        """Fold one CheckinEvent in; returns (enrollment row, answer time or 0 if no answer)."""
        enr = self.index(event["enrollment_id"])
        at = int(event["occurred_at"])
        kind = event["message_type"]
        if event.get("udid"):
            self._link_udid(enr, event["udid"])
        self.last_contact_at[enr] = max(self.last_contact_at[enr], at)
        if kind == "TOKEN_UPDATE":
            self._token_update(enr, event, at)
        elif kind == "CHECK_OUT":
            self.checkout_at[enr] = max(self.checkout_at[enr], at)
        elif kind == "AUTHENTICATE" and event.get("topic") and self.topic[enr] < 0:
            self.topic[enr] = self.topics.intern(event["topic"])
        if kind in _NOT_ANSWERS:
            return enr, 0
        self.last_answer_at[enr] = max(self.last_answer_at[enr], at)
        return enr, at

    def seen(self, enr: int, at: int) -> None:
        """A contact known from elsewhere (the activity topic's last_contact_at, for an
        enrollment whose check-ins are past the topic's retention)."""
        self.last_contact_at[enr] = max(self.last_contact_at[enr], at)

    def learn_trifecta(self, enr: int, topic: str | None, token_hex: str | None,
                       push_magic: str | None, token_updated_at: int | None) -> None:
        """The trifecta a push was sent with, when no newer TokenUpdate is known: an enrollment
        whose TokenUpdate is past the check-ins' retention can still be re-armed."""
        at = token_updated_at or 0
        if at < self.token_updated_at[enr] or (at == self.token_updated_at[enr]
                                               and self.token.get(enr) is not None):
            return
        self.token_updated_at[enr] = at
        if topic:
            self.topic[enr] = self.topics.intern(topic)
        if token_hex:
            self.token.set(enr, token_hex)
        if push_magic:
            self.magic.set(enr, push_magic)

    def _token_update(self, enr: int, event: dict[str, Any], at: int) -> None:
        checkout = self.checkout_at[enr]
        enrolled = self.enrolled_at[enr]
        # First TokenUpdate of this enrollment: the first one ever, or the first after a CheckOut.
        if enrolled == 0 or (checkout >= enrolled and at > checkout) or checkout < at < enrolled:
            self.enrolled_at[enr] = at
        if at < self.token_updated_at[enr]:
            return
        self.token_updated_at[enr] = at
        if event.get("topic"):
            self.topic[enr] = self.topics.intern(event["topic"])
        if event.get("token_hex"):
            self.token.set(enr, event["token_hex"])
        if event.get("push_magic"):
            self.magic.set(enr, event["push_magic"])

    def _link_udid(self, enr: int, udid: str) -> None:
        u = self.udids.intern(udid)
        if self.udid[enr] == u:
            return
        while len(self.udid_head) <= u:
            self.udid_head.append(-1)
        self.udid[enr] = u
        self.udid_next[enr] = self.udid_head[u]
        self.udid_head[u] = enr

    def last_answer(self, enr: int) -> int:
        """Time of the last command poll or report: what a delivered push makes a device send."""
        return self.last_answer_at[enr] if enr < len(self.last_answer_at) else 0

    def last_contact(self, enr: int) -> int:
        return self.last_contact_at[enr] if enr < len(self.last_contact_at) else 0

    def facts(self, enr: int) -> EnrollmentFacts:
        if enr >= len(self.udid):
            return EnrollmentFacts()
        topic = self.topic[enr]

        def opt(v: int) -> int | None:
            return v or None

        return EnrollmentFacts(
            topic=None if topic < 0 else self.topics.string(topic),
            token_hex=self.token.get(enr),
            push_magic=self.magic.get(enr),
            enrolled_at=opt(self.enrolled_at[enr]),
            token_updated_at=opt(self.token_updated_at[enr]),
            last_contact_at=opt(self.last_contact_at[enr]),
            checkout_at=opt(self.checkout_at[enr]),
        )

    def siblings(self, enr: int) -> list[Sibling]:
        """Other enrollment records of the same UDID."""
        if enr >= len(self.udid) or self.udid[enr] < 0:
            return []
        out: list[Sibling] = []
        cur = self.udid_head[self.udid[enr]]
        while cur >= 0:
            if cur != enr:
                f = self.facts(cur)
                out.append(Sibling(self.ids.string(cur), f.push_magic, f.token_updated_at,
                                   f.checked_out))
            cur = self.udid_next[cur]
        return out
